"""Train an agent: python train.py agent=... env=... suite=... seed=... [steps=...] [-m for sweeps]."""

import hydra

from dreamalloc.experiment.cli import train_main


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg):
    return train_main(cfg)


if __name__ == "__main__":
    main()
