"""Evaluate adaptation on held-out tasks: python evaluate.py checkpoint=PATH [suite=NAME]
or a heuristic: python evaluate.py agent=heuristic agent.rule=worst suite=lim2024."""

import hydra

from dreamalloc.experiment.cli import evaluate_main


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg):
    return evaluate_main(cfg)


if __name__ == "__main__":
    main()
