"""kgqa's Slurm launcher (hydra/launcher=slurm): hydra-submitit-launcher's, but a job that ends without a
result (killed: `scancel --signal=KILL`, the out-of-memory killer, a lost node) is recorded as its run's
failure, as a run that fails inside its job records its own (kgqa.cli.sweep_runs): the other runs finish,
the sweep summary names it, and the same command again continues it. submitit alone raises for such a
job and the sweep ends in a traceback. Hydra loads launchers from the hydra_plugins package only."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class KgqaSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit
        from submitit.core.utils import UncompletedJobError

        from kgqa.cli.sweep_runs import record_dead_job

        sweep = Path(str(self.config.hydra.sweep.dir))
        results = submitit.Job.results  # the base launcher's last step: every job's results, in order

        def results_or_failure(job: submitit.Job) -> list:
            try:
                return results(job)
            except UncompletedJobError:
                index = int(job.job_id.split("_")[1]) if "_" in job.job_id else 0  # its place in the array
                overrides = list(job_overrides[index])
                if job.task_id == 0:  # a job of several tasks (DDP): one record, with rank 0's log
                    record_dead_job(sweep / str(initial_job_idx + index), overrides, job.job_id, job.state,
                                    Path(job.paths.stderr))
                return [JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)]

        submitit.Job.results = results_or_failure
        try:
            return super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.Job.results = results
