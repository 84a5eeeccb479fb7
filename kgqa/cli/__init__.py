"""Thin Hydra entry points over conf/."""
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from kgqa.cli.cluster import allotted_threads, swept_name, swept_on_command_line
from kgqa.errors import KgqaError
from kgqa.trusted import CONF

CONFIG_DIR = str(CONF)


def sweep_group(default: str) -> str:
    """All runs of one multirun share a W&B group named after the sweep; single runs use `default`."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return f"{default}-sweep-{'_'.join(Path(hc.sweep.dir).parts[-2:])}"
    return default


def swept_keys() -> set[str]:
    """Keys a multirun varies: comma lists or sweep functions on the command line, or sweeper params."""
    return swept_on_command_line() | set(HydraConfig.get().sweeper.get("params") or {})


def with_swept_factors(cfg: DictConfig) -> None:
    """Every key a multirun sweeps becomes a factor of its runs (under its own dotted name) unless a
    factor already reads it: the sweep's summary then has a column for each, and two runs that differ
    only in a swept key (an Optuna trial's depth or dropout) are two configurations, not one."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    raw = OmegaConf.to_container(cfg.get("factors") or {}, resolve=False)
    read = {str(v).removeprefix("${").removesuffix("}") for v in raw.values()}
    groups = HydraConfig.get().runtime.choices
    with open_dict(cfg):
        for key in sorted(swept_keys()):
            value = f"hydra:runtime.choices.{key}" if key in groups else key
            if value not in read and not key.startswith("hydra"):
                cfg.factors[key] = "${" + value + "}"


def override_name(default: str, exclude: str = "") -> str:
    """A multirun job is named after the values it sweeps (e.g. "target=smp,seed=1"), leaving out the
    keys in `exclude` (e.g. "seed": the configuration that seeds repeat, W&B's job_type); a single
    run, or a job whose swept keys are all excluded, is `default`."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return default
    return swept_name(list(hc.overrides.task), swept_keys() - set(exclude.split())) or default


def resuming(resume: str | None, then: str, otherwise: str) -> str:
    """`then` when this process resumes a run folder (resume=<dir>), else `otherwise`: a resume writes
    inside its run folder only, and one of a folder that does not exist writes nothing."""
    if resume and not Path(resume).is_dir():  # ends here, before Hydra makes a run folder for it
        raise SystemExit(f"kgqa: resume={resume}: no such run folder")
    return then if resume else otherwise


def on_gpu(accelerator: str, then, otherwise):
    """`then` for a trainer on GPUs, else `otherwise`: what a Slurm job asks for follows the trainer."""
    return then if accelerator in ("gpu", "cuda") else otherwise


OmegaConf.register_new_resolver("on_gpu", on_gpu, replace=True)
OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("override_name", override_name, replace=True)
OmegaConf.register_new_resolver("resuming", resuming, replace=True)


def command_line_checked(config_name: str, hydra_main):
    """The console script: `hydra_main` (a hydra.main over conf/<config_name>.yaml) once the command
    line's keys and choices are known ones (kgqa.cli.checks.check_command_line), else one line; a
    non-ASCII value (a path, a question) need not be quoted."""
    def main():
        from kgqa.cli.checks import check_command_line, moved_keys, quoting_non_ascii

        sys.argv[1:] = moved_keys(quoting_non_ascii(sys.argv[1:]))
        try:
            check_command_line(config_name, sys.argv[1:])
        except KgqaError as e:
            raise SystemExit(f"kgqa: {e}") from None
        return hydra_main()
    return main


def reporting_errors(entry, cfg) -> dict[str, float]:
    """Check the config, then run; a user error (bad input, a foreign or untrusted file, a setting that
    cannot work) ends with its message in one line and exit status 1, not a stack trace. In a sweep a run
    that fails (that line, or a crash) is recorded in its folder and the sweep goes on (kgqa.cli.sweep_runs);
    a run that finished in an earlier launch of the same sweep is skipped. A failed run returns no metrics."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    from kgqa.cli.checks import check_config, renamed_keys
    from kgqa.cli.paths import check_paths
    from kgqa.cli.sweep_runs import finished_metrics, in_multirun, passed, record_failure

    allotted_threads()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    done = finished_metrics(run_dir)
    if done is not None:
        return done
    name = override_name(",".join(HydraConfig.get().overrides.task))  # the swept values: "seed=1"
    try:
        renamed_keys(cfg)
        check_config(cfg)
        check_paths(cfg)
        metrics = entry(cfg)
    except (KgqaError, FileNotFoundError, OmegaConfBaseException, InstantiationException) as e:
        cause = e.__cause__ if isinstance(e, InstantiationException) and isinstance(
            e.__cause__, (KgqaError, FileNotFoundError)) else e  # a KgqaError raised while a config object was built
        if in_multirun():
            return record_failure(run_dir, name, str(cause), crash=False)
        raise SystemExit(f"kgqa: {cause}") from None
    except Exception as e:  # a crash: in a sweep the other runs go on
        if not in_multirun():
            raise
        return record_failure(run_dir, name, f"{type(e).__name__}: {e}", crash=True)
    passed(run_dir)
    return metrics
