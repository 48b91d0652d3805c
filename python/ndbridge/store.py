"""Reading a run store (``ndbridge collect --out run.zarr``) as xarray Datasets.

The store is Zarr v3 (``docs/store.md``): a group per source and record name, in it one array
per array name with the record as its first axis, and the index columns ``seq``, ``session``,
``time``, ``received`` and ``attrs``. :func:`open_store` opens every group lazily with
xarray and zarr-python 3 (``pip install zarr xarray``); plain ``zarr.open_group`` and
``xr.open_zarr("<path>/<source>/<record>")`` read it as well::

    import ndbridge
    store = ndbridge.open_store("run.zarr")
    ds = store["worker-0", "step"]          # an xarray.Dataset, dimension "record"
    ds["temperature"].sel(record=ds.seq < 100).mean()
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Store", "open_store", "record_attrs"]


def _xarray():
    try:
        import xarray  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading a store needs xarray and zarr 3 ({e}): pip install 'zarr>=3' xarray"
        ) from e
    import xarray
    return xarray


class Store(Mapping):
    """A run store: a read-only mapping from ``(source, record name)`` to an xarray Dataset.

    Each Dataset has the dimension ``record`` (one per stored record, in the order stored),
    the coordinates ``seq``, ``session``, ``time`` and ``received`` (datetimes) and ``attrs``
    (each record's attrs as JSON: see :func:`record_attrs`), and one variable per array,
    under the array's own name (a segment begun by a change of the array's type or shape is
    named ``<name>~2``, ``<name>~3``, ...; an array whose name is an index column's keeps its
    node's name, which its ``ndbridge.array`` attribute explains). A record that lacks an array
    reads as NaN (0 for integers). Nothing is read until used. Each Dataset is read through its
    group's consolidated metadata, so every variable has the length of the same commit.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        root = self.path / "zarr.json"
        try:
            meta = json.loads(root.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: not a store (no zarr.json)") from None
        if "store" not in meta.get("attributes", {}).get("ndbridge", {}):
            raise ValueError(f"{self.path}: a Zarr group, not an ndbridge store")
        self._groups: dict[tuple[str, str], str] = {}
        for meta_path in sorted(self.path.glob("*/*/zarr.json")):
            attrs = json.loads(meta_path.read_text()).get("attributes", {}).get("ndbridge", {})
            if "source" in attrs and "record" in attrs:
                node = meta_path.parent.relative_to(self.path).as_posix()
                self._groups[(attrs["source"], attrs["record"])] = node

    def __getitem__(self, key: tuple[str, str]):
        try:
            node = self._groups[key]
        except KeyError:
            raise KeyError(f"no records of {key!r} in {self.path}; there are {list(self)}") from None
        xr = _xarray()
        # The group's consolidated metadata is one file replaced at once by each commit: every
        # node read through it has the same length, however the collector's writing goes.
        ds = xr.open_dataset(self.path / node, engine="zarr", consolidated=True, chunks=None)
        names = _variable_names(ds)
        # In two steps: a final name may be another variable's node name now.
        ds = ds.rename({var: f"\0{i}" for i, var in enumerate(names)})
        ds = ds.rename({f"\0{i}": name for i, name in enumerate(names.values())})
        return ds.set_coords([c for c in COLUMNS if c in ds.variables])

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)

    def __repr__(self) -> str:
        return f"<ndbridge.Store {str(self.path)!r}: {len(self)} groups {list(self)}>"

    def journal(self) -> list[dict[str, Any]]:
        """The store's journal: each session end (``{"source", "session", "end"}``, its
        record count) and each record the collector refused (``{"source", "session", "seq",
        "refused"}``), in the order written."""
        path = self.path / "sessions.jsonl"
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
        return entries


#: The index columns of every group: the Dataset's coordinates.
COLUMNS = ("seq", "session", "time", "received", "attrs")


def _variable_names(ds) -> dict[str, str]:
    """Renames from node names to the names arrays had when sent.

    An array's first segment takes the array's name, a later one ``<name>~2``, ``~3``, ...;
    when that name is an index column's or is taken, the segment keeps its node name, made
    unique with ``~2``, ``~3``, ... Names are given first to arrays that can keep their own,
    so a variable of an array's name always holds that array."""
    wanted = {}
    for var in ds.data_vars:
        ours = ds[var].attrs.get("ndbridge", {})
        name, segment = ours.get("array"), ours.get("segment", 0)
        if name is not None:
            wanted[var] = name if segment == 0 else f"{name}~{segment + 1}"
    taken = set(COLUMNS) | {v for v in ds.variables if v not in wanted}
    names = {}
    for var, name in sorted(wanted.items(), key=lambda kv: kv[1]):
        if name not in taken:
            names[var] = name
            taken.add(name)
    for var in sorted(set(wanted) - set(names)):
        name, k = var, 1
        while name in taken:
            k += 1
            name = f"{var}~{k}"
        names[var] = name
        taken.add(name)
    return {var: name for var, name in names.items() if var != name}


def open_store(path: str | Path) -> Store:
    """Opens the run store at ``path`` (see :class:`Store`)."""
    return Store(path)


def record_attrs(ds) -> list[dict[str, Any] | None]:
    """Each record's attrs of a store Dataset, parsed (``None`` for a record sent without)."""
    return [json.loads(text) if text else None for text in ds["attrs"].values.tolist()]
