"""Reading a run store (``ndbridge collect --out run.zarr``) as xarray Datasets.

The store is Zarr v3 (``docs/store.md``): a group per source and record name, in it one array
per array name with the record as its first axis, and the index columns ``seq``, ``session``,
``time``, ``received`` and ``attrs``. :func:`open_store` opens every group lazily with
xarray and zarr-python 3 (``pip install zarr xarray``); plain ``zarr.open_group`` and
``xr.open_zarr(path, group="<source>/<record>")`` read it as well::

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
    named ``<name>~2``, ``<name>~3``, ...). A record that lacks an array reads as NaN (0 for
    integers). Nothing is read until used.
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
        ds = xr.open_dataset(self.path, engine="zarr", group=node, consolidated=False,
                             chunks=None)
        names = {}
        for var in ds.data_vars:
            original = ds[var].attrs.get("ndbridge", {}).get("array")
            if original is not None and original != var and original not in ds.variables:
                names[var] = original
        ds = ds.rename(names)
        # The array's name is its variable's: the attribute would only repeat it.
        return ds.set_coords([c for c in ("seq", "session", "time", "received", "attrs")
                              if c in ds.variables])

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


def open_store(path: str | Path) -> Store:
    """Opens the run store at ``path`` (see :class:`Store`)."""
    return Store(path)


def record_attrs(ds) -> list[dict[str, Any] | None]:
    """Each record's attrs of a store Dataset, parsed (``None`` for a record sent without)."""
    return [json.loads(text) if text else None for text in ds["attrs"].values.tolist()]
