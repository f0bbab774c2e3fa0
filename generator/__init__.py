"""nvflare-jobgen: render NVFlare job folders from a declarative ``jobs.yaml``.

Pipeline, one module per stage: ``load`` (YAML -> data + positions) -> ``validate`` (JSON Schema
and checks the schema cannot express) -> ``spec`` (defaults merged into effective jobs) ->
``render`` (Jinja2 templates -> file contents) -> ``write`` (atomic swap into the output folder).
``simulate`` runs the folders with ``nvflare simulator``; ``lint`` imports NVFlare to check them.
``cli`` is the thin command line on top. Only ``simulate`` and ``lint`` import nvflare.
"""

__version__ = "0.1.0"
