"""`kluis render PROJECT_CODE`: print the Kubernetes objects of a project's workspace as YAML, as
the reconciler would apply them. Reads the database only; touches no cluster.
"""

from __future__ import annotations

from typing import Annotated

import typer
import yaml

from orchestrator.config import Settings
from orchestrator.db import make_engine, make_sessionmaker, session_scope
from orchestrator.errors import KluisError
from orchestrator.manifests import make_workspace
from orchestrator.projects import find_project_by_code
from orchestrator.workspace import desired_workspace


def render(
    ctx: typer.Context,
    project_code: Annotated[str, typer.Argument(help="The project's code, e.g. 12345.")],
) -> None:
    """Print the project's workspace objects as multi-document YAML, in apply order."""
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            project = find_project_by_code(session, project_code)
            if project is None:
                typer.echo(f"error: no project {project_code!r}", err=True)
                raise typer.Exit(1)
            objects = make_workspace(desired_workspace(session, project, settings))
    except KluisError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True), nl=False)
