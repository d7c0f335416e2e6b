"""Batch inference on a Ray cluster: a data set of photo paths in, sharp photos written beside the CLI's.

``pip install 'deblurcli[ray]'``, then ``deblur cluster IN OUT`` or, from Python::

    from deblurcli.ray import deblur_paths
    outcomes = deblur_paths(["/data/shoot"], "/data/shoot_sharp", address="auto")

The driver plans the run exactly as ``deblur IN -r -o OUT`` does (:mod:`deblurcli.batch`: the same input
discovery, output names, collision checks and skipping of existing outputs); a Ray Data ``map_batches``
then sends the jobs to a pool of actors that each load the model once (one GPU each when the cluster has
GPUs) and process their rows with :func:`deblurcli.runner.run_jobs` -- the CLI's own per-file code,
overlapped reads and writes included -- so the files written are the CLI's byte for byte. Each file
becomes one row of the result table (an :class:`~deblurcli.runner.Outcome`); a file that fails is a
failed row, never the end of the job.

Paths must mean the same on every node: inputs, outputs and ``weights`` live on a shared file system
(they are made absolute on the driver, since Ray workers do not run in the driver's folder). Ray is
imported only when a run starts, so this module imports without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deblurcli.errors import DeblurError

if TYPE_CHECKING:
    import numpy as np

    from deblurcli.batch import Job
    from deblurcli.runner import Outcome

__all__ = ["ClusterOptions", "deblur_paths", "import_ray"]

RAY_MISSING = "Ray is not installed: pip install 'deblurcli[ray]' (or pip install 'ray[data]')"
#: Table columns of a result row, in order (``Outcome.as_dict``'s keys plus the job's place in the plan).
COLUMNS = (
    "index", "input", "output", "status", "reason", "megapixels", "seconds", "model_seconds", "compare", "warnings",
    "method", "kernel_size", "confidence", "kernel", "decision",
)


def import_ray() -> Any:
    """``ray`` with Ray Data, or a one-line :class:`DeblurError` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise DeblurError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class ClusterOptions:
    """How the work is spread: actors in the pool, and what each one reserves.

    ``actors`` None: one per GPU when the cluster has GPUs (and ``device`` allows them), else one per
    ``cpus_per_actor`` CPUs. ``gpus_per_actor`` None: 1 when GPUs are used, else 0. Each actor runs torch
    with as many threads as CPUs it reserved. ``rows_per_call`` photos go to an actor per call: enough for
    its reader and writer threads to overlap with the model, few enough to spread a small data set.
    """

    actors: int | None = None
    cpus_per_actor: float | None = None
    gpus_per_actor: float | None = None
    rows_per_call: int = 4


class DeblurActor:
    """One Session (model, device, tile plan), built once per actor; each call deblurs a batch of rows with
    the CLI's runner."""

    def __init__(self, session: dict[str, Any], settings: dict[str, Any]) -> None:
        import ray

        from deblurcli.devices import keep_host_memory
        from deblurcli.runner import Settings
        from deblurcli.session import Session

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        keep_host_memory()  # the actor's process runs this one model until it ends, as the CLI does
        # torch would otherwise take every core of the node in each actor
        self.session = Session(**session, threads=max(1, int(cpus)))
        self.settings = Settings(**settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        from deblurcli.batch import Job
        from deblurcli.runner import Outcome, run_jobs

        jobs = [Job(Path(s), Path(d), Path(r)) for s, d, r in zip(batch["src"], batch["dst"], batch["rel"])]
        outcomes: dict[int, Outcome] = {}
        end = run_jobs(jobs, self.session, self.settings, on_result=outcomes.__setitem__)
        reason = {"disk_full": "not processed: the output disk is full", "interrupted": "not processed: interrupted"}.get(end)
        rows = [outcomes.get(i) or Outcome(job.src, job.dst, "failed", reason) for i, job in enumerate(jobs)]
        return _columns([int(i) for i in batch["index"]], rows)


def _columns(indices: Sequence[int], outcomes: Sequence[Outcome]) -> dict[str, list[Any]]:
    """Outcomes as table columns; warnings as JSON text, since Arrow wants one type per column."""
    records = [o.as_dict() for o in outcomes]
    table: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for index, record in zip(indices, records):
        record = {**record, "index": index, "warnings": json.dumps(record["warnings"], ensure_ascii=False)}
        for name in COLUMNS:
            table[name].append(record[name])
    return table


def _outcome(row: dict[str, Any]) -> Outcome:
    from deblurcli.runner import Outcome

    def path(value: Any) -> Path | None:
        return None if value is None else Path(value)

    return Outcome(
        Path(row["input"]), path(row["output"]), str(row["status"]), row["reason"] or None, float(row["megapixels"]),
        float(row["seconds"]), path(row["compare"]), list(json.loads(row["warnings"])), float(row["model_seconds"]),
        method=row["method"] or None, kernel_size=None if row["kernel_size"] is None else int(row["kernel_size"]),
        confidence=None if row["confidence"] is None else float(row["confidence"]), kernel=path(row["kernel"]),
        decision=row["decision"] or None,
    )


def _pool(ray: Any, device: str, options: ClusterOptions) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) from the options and what the cluster has."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1.0)), float(resources.get("GPU", 0.0))
    use_gpus = gpus >= 1 and not device.startswith(("cpu", "mps"))
    gpus_per = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if use_gpus else 0.0)
    cpus_per = options.cpus_per_actor if options.cpus_per_actor is not None else (2.0 if gpus_per else min(4.0, cpus))
    if options.actors is not None:
        actors = options.actors
    elif gpus_per:
        actors = max(1, int(gpus // gpus_per))
    else:
        actors = max(1, int(cpus // cpus_per))
    return actors, cpus_per, gpus_per


def deblur_paths(
    paths: Sequence[str | Path],
    output: str | Path | None,
    *,
    recursive: bool = True,
    method: str = "auto",
    model: str | None = None,
    weights: str | Path | None = None,
    kernel: str | Path | None = None,
    kernel_size: int = 35,
    blur_domain: str = "auto",
    refiner: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    tile: int | None = None,
    overlap: int = 32,
    strength: float = 1.0,
    compare: bool = False,
    save_kernel: bool = False,
    overwrite: bool = False,
    in_place: bool = False,
    allow_huge: bool = False,
    quality: int = 95,
    address: str | None = None,
    cluster: ClusterOptions | None = None,
) -> list[Outcome]:
    """Deblur photos and folders on a Ray cluster; one :class:`Outcome` per input, in plan order.

    Options mean what the ``deblur`` command's options of the same names mean (``tile`` None: planned from
    free memory on each actor). ``address`` is passed to ``ray.init`` when Ray is not initialised yet
    (None: ``RAY_ADDRESS`` or a local Ray). Raises :class:`DeblurError` when Ray is missing, and
    :class:`deblurcli.batch.PlanError` for an impossible plan (two inputs onto one output, ...); missing
    inputs, unreadable photos and failed writes come back as failed rows. Outputs that exist are skipped
    unless ``overwrite``/``in_place``.
    """
    from deblurcli.batch import find_inputs, plan_jobs
    from deblurcli.engine import check_strength
    from deblurcli.runner import Outcome, Settings
    from deblurcli.session import is_weights_file

    check_strength(strength)
    settings = Settings(compare, overwrite, in_place, allow_huge, quality, save_kernel)
    out_path = None if output is None else Path(output).absolute()
    absolute = [Path(p).absolute() for p in paths]
    inputs, problems = find_inputs(absolute, recursive=recursive, exclude=[out_path] if out_path is not None else [])
    jobs = plan_jobs(inputs, out_path, in_place=in_place)
    listed = [Outcome(path, None, "failed", reason) for path, reason in problems]
    by_index: dict[int, Outcome] = {}
    todo: list[tuple[int, Job]] = []
    for index, job in enumerate(jobs):
        skipped = settings.existing(job)
        if skipped is None:
            todo.append((index, job))
        else:
            by_index[index] = skipped
    session = {
        "method": method, "model": model, "weights": None if weights is None else str(Path(weights).absolute()),
        "kernel": None if kernel is None else str(Path(kernel).absolute()), "kernel_size": kernel_size, "blur_domain": blur_domain,
        "refiner": str(Path(refiner).absolute()) if is_weights_file(refiner) else refiner,
        "device": device, "precision": precision, "backend": backend, "tile": tile, "overlap": overlap, "strength": strength,
    }
    if todo:
        by_index.update(_run_on_ray(todo, session, vars(settings), address, cluster or ClusterOptions()))
    missing = "no result came back from the cluster"
    return listed + [by_index.get(i) or Outcome(job.src, job.dst, "failed", missing) for i, job in enumerate(jobs)]


def _run_on_ray(
    todo: Sequence[tuple[int, Job]], session: dict[str, Any], settings: dict[str, Any], address: str | None, cluster: ClusterOptions
) -> dict[int, Outcome]:
    """The jobs through a Ray Data actor pool: {plan index: outcome}."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address)
    actors, cpus_per, gpus_per = _pool(ray, session["device"], cluster)
    items = [{"index": i, "src": str(j.src), "dst": str(j.dst), "rel": str(j.rel)} for i, j in todo]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), actors * 4))).map_batches(
        DeblurActor,
        fn_constructor_kwargs={"session": session, "settings": settings},
        batch_size=max(1, cluster.rows_per_call),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per,
        num_gpus=gpus_per,
    )
    return {int(row["index"]): _outcome(row) for row in dataset.take_all()}
