"""kgqa-predict: answer a question typed on the command line, or write a leaderboard file."""
import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from kgqa.cli import CONFIG_DIR, command_line_checked, reporting_errors
from kgqa.data.kgclue import read_qa
from kgqa.decoding.answerer import answerer_from_config
from kgqa.errors import ConfigError
from kgqa.files import atomic_output
from kgqa.build import restore


def predict(cfg: DictConfig) -> None:
    if (cfg.question is None) == (cfg.input is None):
        raise ConfigError("give exactly one of question=\"...\" or input=<KgCLUE json lines file>")
    cfg, dm, module = restore(cfg.ckpt, cfg)
    dm.setup()
    answerer = answerer_from_config(dm.keyspace, dm.tokenizer, cfg.decode, cfg.get("lookahead"), dm.max_question_len,
                                    cfg.batch_size, cfg.get("corrections"), module.reranker)
    module.eval()
    if cfg.question is not None:
        try:
            question = answerer.check_question(str(cfg.question))
        except ValueError as e:
            raise ConfigError(f"question: {e}") from None
        answers = answerer(module.model, [question])[0]
        if answers[0].confidence < cfg.decode.min_confidence:
            print(f"no confident answer: the best has confidence {answers[0].confidence:.3f} < decode.min_confidence")
            return
        for rank, a in enumerate(answers, 1):
            print(f"{rank}. {a.triple.answer()}  ({'from the correction memory' if a.from_memory else f'confidence {a.confidence:.3f}'})")
            if len(a.objects) > 1:
                print(f"   all objects: {' | '.join(a.objects)}")
        return
    examples = read_qa(cfg.input, labelled=False)
    answers = answerer(module.model, [e.question for e in examples])
    out = Path(cfg.output)
    with atomic_output(out) as f:
        for e, a in zip(examples, answers):
            f.write(json.dumps({"id": e.id, "question": e.question, "answer": a[0].triple.answer()}
                               | ({"from_memory": a[0].from_memory} if answerer.memory else {}), ensure_ascii=False) + "\n")
    print(f"wrote {len(examples)} answers to {out}", file=sys.stderr)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def hydra_main(cfg: DictConfig) -> None:
    reporting_errors(predict, cfg)


main = command_line_checked("predict", hydra_main)

if __name__ == "__main__":
    main()
