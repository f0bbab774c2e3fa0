"""nvflare-jobgen: render NVFlare job folders from a declarative ``jobs.yaml``.

Pipeline, one module per stage: ``load`` (YAML -> data + positions) -> ``validate`` (JSON Schema
and checks the schema cannot express) -> ``spec`` (defaults merged into effective jobs) ->
``render`` (Jinja2 templates -> file contents) -> ``write`` (atomic swap into the output folder).
``simulate`` runs the folders with ``nvflare simulator`` and checks them, reading the metrics
stores back with ``metrics`` and plotting them with ``report``; ``viewers`` opens a tracker's own
viewer on them; ``lint`` imports NVFlare to check the folders. ``cli`` is the thin command line on
top. Only the simulate, view and lint paths import nvflare, mlflow, tensorboard, wandb or matplotlib.
"""

__version__ = "0.1.0"
