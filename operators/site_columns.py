"""The sites of one shard as columns: one numpy array per field, one row per site.

An object per site (the shard's state before version 4) costs a dictionary
lookup, an attribute access and a tuple per field and reading, and a Python
loop per site and tick to compute contributions. Here a batch of readings is
written into the columns with a few array operations, and a tick computes the
status, contribution vector and difference of every site it looks at at once
(:func:`contributions`), with the same float operations in the same order as
:func:`operators.twin.contribution`, so the integers are the same, bit for bit.

A row never moves: ``index`` maps a site id to its row for the life of the
shard (sites are few thousand per shard and are not deleted). Arrays grow by
doubling; only the first ``n`` rows are sites.

Pure data, no I/O.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from operators import twin as tw
from operators.ancestry import Ancestry, Chains, node_kind
from operators.windows import SEEN_SPAN, MinuteWindow

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]

#: "No value" in an int64 column (no reading, nothing stale): below any epoch millisecond.
NONE = int(np.iinfo(np.int64).min)
#: "Never" in a time column (nothing pending): beyond any epoch millisecond.
NEVER = int(np.iinfo(np.int64).max)

# Status codes of the ``status`` column and their names.
UNKNOWN, ONLINE, DELAYED, OFFLINE = 0, 1, 2, 3
STATUS_NAMES = (tw.UNKNOWN, tw.ONLINE, tw.DELAYED, tw.OFFLINE)
STATUS_CODES = {name: code for code, name in enumerate(STATUS_NAMES)}

#: Columns of float64 (reading fields and the site's registered limits), NaN where nothing is known.
FLOATS = ("soc", "battery", "solar", "load", "grid", "temp", "capacity", "reserve", "max_charge",
          "max_discharge")
#: Columns of int64 and their empty value.
INTS = {"event_ms": NONE, "seq": 0, "sent_stale": NONE, "recheck": NEVER, "sent_set": -1,
        "chain_set": -1, "chain_from": NEVER, "chain_until": NONE}
#: Boolean columns: changed since the last tick, twin to write, limits to write.
FLAGS = ("changed", "dirty", "new_limits")
#: Object columns: the reading's mode and active command, the site's ancestry.
OBJECTS = ("mode", "command", "ancestry")
#: Columns a snapshot leaves out: the limits (the ancestry has them) and the chain lookups it caches.
DERIVED = frozenset({"capacity", "reserve", "max_charge", "max_discharge", "chain_set", "chain_from",
                     "chain_until"})


class SiteColumns:
    """Rows of sites: the last reading, status, what was last sent, timers and limits."""

    def __init__(self, capacity: int = 64) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.n = 0
        self.size = capacity
        self.cols: dict[str, Any] = {}
        for name in FLOATS:
            self.cols[name] = np.full(capacity, np.nan)
        for name, empty in INTS.items():
            self.cols[name] = np.full(capacity, empty, dtype=np.int64)
        for name in FLAGS:
            self.cols[name] = np.zeros(capacity, dtype=np.bool_)
        for name in OBJECTS:
            self.cols[name] = np.full(capacity, None, dtype=object)
        self.cols["status"] = np.zeros(capacity, dtype=np.int8)
        self.cols["sent"] = np.zeros((capacity, tw.VECTOR_SIZE), dtype=np.int64)
        #: Ancestries set so far (:meth:`set_ancestry`): with ``n``, when :meth:`state` pickles them again.
        self.ancestries_set = 0
        self._pickled_ancestries: tuple[tuple[int, int], Pickled] | None = None
        self._bind()

    def _bind(self) -> None:
        """Attributes for the columns (the hot paths read them without a dict lookup)."""
        c = self.cols
        self.soc: F64 = c["soc"]
        self.battery: F64 = c["battery"]
        self.solar: F64 = c["solar"]
        self.load: F64 = c["load"]
        self.grid: F64 = c["grid"]
        self.temp: F64 = c["temp"]
        self.capacity: F64 = c["capacity"]
        self.reserve: F64 = c["reserve"]
        self.max_charge: F64 = c["max_charge"]
        self.max_discharge: F64 = c["max_discharge"]
        #: Event time of the last reading (NONE: never heard from) and its sequence number.
        self.event_ms: I64 = c["event_ms"]
        self.seq: I64 = c["seq"]
        #: Last seen time the site's nodes list it as stale with (NONE: not listed).
        self.sent_stale: I64 = c["sent_stale"]
        #: When the contribution must be looked at again though nothing is heard (NEVER: no need).
        self.recheck: I64 = c["recheck"]
        #: The chain set (ancestor chains, :class:`ChainTable`) the vector ``sent`` was added to.
        self.sent_set: I64 = c["sent_set"]
        #: The chain set of the site's ancestry, valid over [chain_from, chain_until).
        self.chain_set: I64 = c["chain_set"]
        self.chain_from: I64 = c["chain_from"]
        self.chain_until: I64 = c["chain_until"]
        self.changed: Flags = c["changed"]
        self.dirty: Flags = c["dirty"]
        self.new_limits: Flags = c["new_limits"]
        self.mode: Objects = c["mode"]
        self.command: Objects = c["command"]
        self.ancestry: Objects = c["ancestry"]
        self.status: npt.NDArray[np.int8] = c["status"]
        #: The contribution vector last sent (integers as in :func:`operators.twin.contribution`).
        self.sent: npt.NDArray[np.int64] = c["sent"]

    def row(self, site_id: str) -> int:
        """The row of ``site_id``, added if new."""
        row = self.index.get(site_id)
        if row is None:
            if self.n == self.size:
                self._grow()
            row = self.index[site_id] = self.n
            self.ids.append(site_id)
            self.n += 1
        return row

    def _grow(self) -> None:
        size = self.size * 2
        for name, column in self.cols.items():
            wider = np.empty((size, *column.shape[1:]), dtype=column.dtype)
            wider[:self.size] = column
            wider[self.size:] = _empty_of(name, column)
            self.cols[name] = wider
        self.size = size
        self._bind()

    def set_ancestry(self, row: int, ancestry: Ancestry) -> None:
        """Hold ``ancestry`` for ``row``: its limits, and chains to be looked up again."""
        self.ancestry[row] = ancestry
        self.ancestries_set += 1
        self.capacity[row] = ancestry.capacity_kwh
        self.reserve[row] = ancestry.reserve_pct
        self.max_charge[row] = ancestry.max_charge_kw
        self.max_discharge[row] = ancestry.max_discharge_kw
        self.chain_until[row] = NONE

    def state(self) -> dict[str, Any]:
        """The first ``n`` rows of every column but those derived from others, copied (for a snapshot).

        The ancestries (an object each, with a tuple per version and path: most of what a snapshot
        pickles) are pickled only when one was set or a row added since the last snapshot, and come
        back from the snapshot as the same object column (:class:`Pickled`).
        """
        columns = {name: column[:self.n].copy() for name, column in self.cols.items()
                   if name not in DERIVED and name != "ancestry"}
        key = (self.ancestries_set, self.n)
        if self._pickled_ancestries is None or self._pickled_ancestries[0] != key:
            self._pickled_ancestries = key, Pickled(self.ancestry[:self.n])
        columns["ancestry"] = self._pickled_ancestries[1]
        return columns

    @classmethod
    def from_state(cls, ids: tuple[str, ...], columns: dict[str, Any]) -> SiteColumns:
        """Rows as :meth:`state` gave them; a column missing from an older state starts empty."""
        table = cls(max(64, 1 << max(0, len(ids) - 1).bit_length()))
        table.ids = list(ids)
        table.index = {site: row for row, site in enumerate(ids)}
        table.n = len(ids)
        for name, column in table.cols.items():
            if name in columns and name not in DERIVED:
                column[:table.n] = columns[name]
        for row, ancestry in enumerate(table.ancestry[:table.n].tolist()):
            if ancestry is not None:
                table.set_ancestry(row, ancestry)
        return table


class Pickled:
    """A value pickled once, when made; pickling this object again copies those bytes, and unpickling
    it gives the value (a copy of it as it was when made), not a :class:`Pickled`. So a snapshot
    with it reads exactly as one with the value, by this code and by code that never heard of it.
    """

    __slots__ = ("data",)

    def __init__(self, value: object) -> None:
        self.data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        return pickle.loads, (self.data,)


def _empty_of(name: str, column: Any) -> Any:
    if name in INTS:
        return INTS[name]
    if name in FLOATS:
        return np.nan
    if name in OBJECTS:
        return None
    return 0


def contributions(t: SiteColumns, rows: I64, status: npt.NDArray[np.int8], counted: Flags) -> I64:
    """The contribution vectors of ``rows`` at ``status`` (as :func:`operators.twin.contribution`).

    ``counted``: rows with an ancestry and chains to send to; the others contribute zero.
    The float operations are those of :mod:`operators.twin`, in the same order, and rounding
    to units is half to even like Python's ``round``, so the integers are the same.
    """
    k = len(rows)
    vectors = np.zeros((k, tw.VECTOR_SIZE), dtype=np.int64)
    if not counted.any():
        return vectors
    has = counted & (t.event_ms[rows] != NONE)
    online = has & (status == ONLINE)
    vectors[:, tw.EXPECTED] = counted
    vectors[:, tw.DELAYED_COUNT] = counted & (status == DELAYED)
    vectors[:, tw.OFFLINE_COUNT] = counted & (status != DELAYED) & (status != ONLINE)
    vectors[:, tw.REPORTING] = online
    if not has.any():
        return vectors
    soc, capacity, reserve = t.soc[rows], t.capacity[rows], t.reserve[rows]
    with np.errstate(invalid="ignore"):
        energy_kwh = np.maximum(0.0, capacity * (soc - reserve) / 100.0)
        headroom_kwh = np.maximum(0.0, capacity * (100.0 - soc) / 100.0)
        discharge = np.minimum(t.max_discharge[rows], energy_kwh / tw.AVAILABILITY_HORIZON_H)
        charge = np.minimum(t.max_charge[rows], headroom_kwh / tw.AVAILABILITY_HORIZON_H)
        estimates = {tw.EST_BATTERY: t.battery[rows], tw.EST_ENERGY: energy_kwh,
                     tw.EST_HEADROOM: headroom_kwh, tw.EST_AVAIL_DISCHARGE: discharge,
                     tw.EST_AVAIL_CHARGE: charge}
        measured = {tw.BATTERY: tw.EST_BATTERY, tw.ENERGY: tw.EST_ENERGY, tw.HEADROOM: tw.EST_HEADROOM,
                    tw.AVAIL_DISCHARGE: tw.EST_AVAIL_DISCHARGE, tw.AVAIL_CHARGE: tw.EST_AVAIL_CHARGE}
        for position, values in estimates.items():
            vectors[:, position] = np.where(has, _units(values), 0)
        for position, estimate in measured.items():
            vectors[:, position] = np.where(online, vectors[:, estimate], 0)
        for position, values in ((tw.SOLAR, t.solar[rows]), (tw.LOAD, t.load[rows]), (tw.GRID, t.grid[rows])):
            vectors[:, position] = np.where(online, _units(values), 0)
    return vectors


def _units(kw: F64) -> I64:
    """:func:`operators.twin.units` of every element (NaN, where nothing is known, becomes 0)."""
    scaled = np.rint(kw * tw.UNITS_PER_KW)
    return np.where(np.isfinite(scaled), scaled, 0.0).astype(np.int64)


class ChainTable:
    """Numbers for the chain sets, chains and nodes a shard's sites send to, and the sums over them.

    A site's chains of ancestors (one per hierarchy) are a *chain set*; sites share chains, and the
    nodes of a chain are fixed, so a tick sums the differences of its sites per chain and then per
    node with two grouped additions instead of one vector addition per site and node.
    """

    def __init__(self) -> None:
        self.sets: list[Chains] = []
        self._set_ids: dict[Chains, int] = {}
        self.chains: list[tuple[str, tuple[str, ...]]] = []
        self._chain_ids: dict[tuple[str, tuple[str, ...]], int] = {}
        self._set_chains: list[tuple[int, ...]] = []
        self._chain_nodes: list[tuple[int, ...]] = []
        self.nodes: list[str] = []
        self._node_ids: dict[str, int] = {}
        #: (hierarchy, kind) of each node, as its first chain gives it.
        self.meta: list[tuple[str, str]] = []
        self._matrices: tuple[I64, I64] | None = None
        self._set_nodes: I64 | None = None
        self._groups: I64 = np.zeros(0, dtype=np.int64)

    def intern(self, chains: Chains) -> int:
        """The id of chain set ``chains`` (-1 for none)."""
        if not chains:
            return -1
        found = self._set_ids.get(chains)
        if found is not None:
            return found
        ids = tuple(self._chain(chain) for chain in chains)
        number = self._set_ids[chains] = len(self.sets)
        self.sets.append(chains)
        self._set_chains.append(ids)
        self._matrices = self._set_nodes = None
        return number

    def _chain(self, chain: tuple[str, tuple[str, ...]]) -> int:
        found = self._chain_ids.get(chain)
        if found is not None:
            return found
        hierarchy, node_ids = chain
        nodes = []
        for depth, node in enumerate(node_ids):
            number = self._node_ids.get(node)
            if number is None:
                number = self._node_ids[node] = len(self.nodes)
                self.nodes.append(node)
                self.meta.append((hierarchy, node_kind(hierarchy, depth)))
            nodes.append(number)
        found = self._chain_ids[chain] = len(self.chains)
        self.chains.append(chain)
        self._chain_nodes.append(tuple(nodes))
        return found

    def _padded(self) -> tuple[I64, I64]:
        if self._matrices is None:
            self._matrices = (_pad(self._set_chains), _pad(self._chain_nodes))
        return self._matrices

    def groups(self, group_of: Callable[[str], int]) -> I64:
        """The node group of each node number, by ``group_of`` (the same function every call: a
        shard's node groups are fixed)."""
        if len(self._groups) < len(self.nodes):
            self._groups = np.array([group_of(node) for node in self.nodes], dtype=np.int64)
        return self._groups

    def set_nodes(self) -> I64:
        """The node numbers of each chain set, a padded row per set (-1: no node)."""
        if self._set_nodes is None:
            self._set_nodes = _pad([tuple(node for chain in chains for node in self._chain_nodes[chain])
                                    for chains in self._set_chains])
        return self._set_nodes

    def node_sums(self, sets: I64, diffs: I64) -> tuple[I64, I64]:
        """Per node, the sum of ``diffs`` of the rows whose chain set (``sets``) reaches it.

        Every node on a chain of any given row is in the answer, even when its sum is zero.
        """
        if len(sets) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, diffs.shape[1]), dtype=np.int64)
        set_matrix, chain_matrix = self._padded()
        chain_ids, chain_sums = _grouped(set_matrix[sets], diffs)
        return _grouped(chain_matrix[chain_ids], chain_sums)


def _pad(rows: list[tuple[int, ...]]) -> I64:
    width = max((len(r) for r in rows), default=1) or 1
    matrix = np.full((max(1, len(rows)), width), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        matrix[i, :len(row)] = row
    return matrix


def _grouped(targets: I64, values: I64) -> tuple[I64, I64]:
    """Sum ``values[i]`` into each target id of ``targets[i]`` (a padded row; -1 is no target)."""
    width = targets.shape[1]
    flat = targets.ravel()
    source = np.repeat(np.arange(len(targets)), width)
    valid = flat >= 0
    ids, where = np.unique(flat[valid], return_inverse=True)
    sums = np.zeros((len(ids), values.shape[1]), dtype=np.int64)
    np.add.at(sums, where, values[source[valid]])
    return ids, sums


#: Float sums, minima and maxima of a minute window, with their empty values.
_WINDOW_FLOATS = {"battery_sum": 0.0, "battery_min": np.inf, "battery_max": -np.inf, "solar_sum": 0.0,
                  "load_sum": 0.0, "grid_sum": 0.0, "last_soc": 0.0}
_WINDOW_INTS = {"samples": 0, "last_event": -1, "last_seq": -1}
#: ``seen_base`` of a row with no reading yet, and of a row whose numbers are held in ``wide``.
_NO_BASE, _WIDE = -1, -2
#: Bits of the ``seen_bits`` word.
_WORD = 64
#: The columns of the sequence numbers seen (a snapshot keeps them as (row, base, mask) triples).
_SEEN = frozenset({"seen_base", "seen_bits"})
_EMPTY: dict[str, Any] = {**_WINDOW_FLOATS, **_WINDOW_INTS, "seen_base": _NO_BASE, "seen_bits": 0}


class MinuteColumns:
    """One open minute of a shard's sites, as columns over the shard's rows (a site without a
    reading in the minute has ``samples`` 0): the statistics of :class:`MinuteWindow`, counted
    for a whole batch at once.

    The statistics are added in arrival order (``np.add.at`` is sequential per element), so the
    float sums are those a :class:`MinuteWindow` per site would hold, to the bit. Re-delivered
    readings are recognised exactly as :meth:`MinuteWindow.add` does (sequence numbers as bits
    from the first number seen). Where those bits fit one 64-bit word (a site sending up to once a
    second, in order), they live in a column and a batch is checked with array operations
    (:meth:`_fresh`); a row whose numbers span more (or go below the first) is moved for good to
    ``wide``, a dict of Python integers checked one reading at a time, as every row was before.
    """

    def __init__(self, size: int) -> None:
        self.cols: dict[str, Any] = {}
        for name, empty in _WINDOW_FLOATS.items():
            self.cols[name] = np.full(size, empty)
        for name, empty in _WINDOW_INTS.items():
            self.cols[name] = np.full(size, empty, dtype=np.int64)
        #: First sequence number seen per row (_NO_BASE: none yet; _WIDE: the row is in ``wide``) ...
        self.cols["seen_base"] = np.full(size, _NO_BASE, dtype=np.int64)
        #: ... and the numbers seen from it, as bits of one word.
        self.cols["seen_bits"] = np.zeros(size, dtype=np.uint64)
        #: row -> (first sequence number seen, bit mask of the numbers seen from it), for the rows
        #: whose numbers do not fit a word.
        self.wide: dict[int, tuple[int, int]] = {}

    def grow(self, size: int) -> None:
        for name, column in self.cols.items():
            if len(column) < size:
                wider = np.full(size, _EMPTY[name], dtype=column.dtype)
                wider[:len(column)] = column
                self.cols[name] = wider

    def add(self, rows: I64, seq: I64, event: I64, values: dict[str, F64]) -> None:
        """Count readings (in arrival order) of ``rows``; ``values``: battery, solar, load, grid, soc."""
        fresh = self._fresh(rows, seq)
        if not fresh.all():
            rows, seq, event = rows[fresh], seq[fresh], event[fresh]
            values = {name: column[fresh] for name, column in values.items()}
            if len(rows) == 0:
                return
        c = self.cols
        np.add.at(c["samples"], rows, 1)
        battery = values["battery"]
        np.add.at(c["battery_sum"], rows, battery)
        np.minimum.at(c["battery_min"], rows, battery)
        np.maximum.at(c["battery_max"], rows, battery)
        np.add.at(c["solar_sum"], rows, values["solar"])
        np.add.at(c["load_sum"], rows, values["load"])
        np.add.at(c["grid_sum"], rows, values["grid"])
        order = np.lexsort((seq, event, rows))
        ordered = rows[order]
        last = order[np.r_[ordered[1:] != ordered[:-1], True]]
        at = rows[last]
        held_event, held_seq = c["last_event"][at], c["last_seq"][at]
        newer = (event[last] > held_event) | ((event[last] == held_event) & (seq[last] > held_seq))
        last, at = last[newer], at[newer]
        c["last_event"][at], c["last_seq"][at] = event[last], seq[last]
        c["last_soc"][at] = values["soc"][last]

    def _fresh(self, rows: I64, seq: I64) -> Flags:
        """Whether each reading (in arrival order) is counted for the first time, as
        :meth:`MinuteWindow._first_time` would say, reading after reading."""
        c = self.cols
        held = c["seen_base"][rows]
        # Each row's base: the one held, or the first number of the batch for a row new to the minute.
        firsts, first_at = np.unique(rows, return_index=True)
        distinct = len(firsts) == len(rows)
        base = held
        new = held == _NO_BASE
        if new.any():
            if distinct:
                base = np.where(new, seq, held)
            else:
                first_seq = seq[first_at[np.searchsorted(firsts, rows)]]
                base = np.where(new, first_seq, held)
        offset = seq - base
        out_of_word = (held == _WIDE) | (offset < 0) | (offset >= _WORD)
        if out_of_word.any():
            fresh = np.ones(len(rows), dtype=np.bool_)
            narrow = ~np.isin(rows, rows[out_of_word])
            slow = np.flatnonzero(~narrow)
            fresh[slow] = list(self._wide_first_times(rows[slow].tolist(), seq[slow].tolist()))
            rows, offset, base = rows[narrow], offset[narrow], base[narrow]
            if len(rows):
                fresh[narrow] = self._word_first_times(rows, offset, base, distinct)
            return fresh
        return self._word_first_times(rows, offset, base, distinct)

    def _word_first_times(self, rows: I64, offset: I64, base: I64, distinct: bool) -> Flags:
        """:meth:`_fresh` for readings whose numbers fit their rows' words (``offset`` from ``base``);
        ``distinct``: no row twice among them."""
        c = self.cols
        bits = np.left_shift(np.uint64(1), offset.astype(np.uint64))
        fresh: Flags = (c["seen_bits"][rows] & bits) == 0
        c["seen_base"][rows] = base
        if distinct:
            c["seen_bits"][rows] |= bits
            return fresh
        # Only the first of equal (row, number) pairs in the batch is new; the others are re-deliveries.
        _, first = np.unique(rows * _WORD + offset, return_index=True)
        once = np.zeros(len(rows), dtype=np.bool_)
        once[first] = True
        np.bitwise_or.at(c["seen_bits"], rows, bits)
        return once & fresh

    def _wide_first_times(self, rows: list[int], seqs: list[int]) -> Iterator[bool]:
        """:meth:`MinuteWindow._first_time` of each reading, one by one, for rows moved to ``wide``
        (a row still in the word columns is moved first)."""
        c = self.cols
        base_column, bits_column = c["seen_base"], c["seen_bits"]
        for row in set(rows):
            base = int(base_column[row])
            if base != _WIDE:
                if base != _NO_BASE:
                    self.wide[row] = (base, int(bits_column[row]))
                base_column[row], bits_column[row] = _WIDE, 0
        seen = self.wide
        for row, seq in zip(rows, seqs, strict=True):
            held = seen.get(row)
            if held is None:
                seen[row] = (seq, 1)
                yield True
                continue
            base, mask = held
            offset = seq - base
            if offset < 0:
                if -offset >= SEEN_SPAN:
                    yield True
                    continue
                mask <<= -offset
                base, offset = seq, 0
            if offset >= SEEN_SPAN:
                seen[row] = (base, mask)
                yield True
                continue
            bit = 1 << offset
            seen[row] = (base, mask | bit)
            yield not mask & bit

    def _seen(self, row: int) -> tuple[int, int] | None:
        """(first sequence number seen, bits of the numbers seen from it) of ``row``, None if none."""
        base = int(self.cols["seen_base"][row])
        if base == _WIDE:
            return self.wide[row]
        return None if base == _NO_BASE else (base, int(self.cols["seen_bits"][row]))

    def _hold_seen(self, row: int, base: int, mask: int) -> None:
        if mask < 1 << _WORD:
            self.cols["seen_base"][row], self.cols["seen_bits"][row] = base, mask
        else:
            self.cols["seen_base"][row], self.cols["seen_bits"][row] = _WIDE, 0
            self.wide[row] = (base, mask)

    def rows(self) -> list[int]:
        """The rows with a reading in this minute."""
        return np.flatnonzero(self.cols["samples"] > 0).tolist()

    def window(self, row: int) -> MinuteWindow | None:
        """Row ``row`` as a :class:`MinuteWindow` (None: no reading in this minute)."""
        c = self.cols
        if row >= len(c["samples"]) or c["samples"][row] == 0:
            return None
        base, mask = self._seen(row) or (-1, 0)
        return MinuteWindow(int(c["samples"][row]), float(c["battery_sum"][row]),
                            float(c["battery_min"][row]), float(c["battery_max"][row]),
                            float(c["solar_sum"][row]), float(c["load_sum"][row]), float(c["grid_sum"][row]),
                            (int(c["last_event"][row]), int(c["last_seq"][row])), float(c["last_soc"][row]),
                            base, mask)

    def put(self, row: int, window: MinuteWindow) -> None:
        """Hold ``window`` as row ``row`` (restoring a snapshot with an object per site)."""
        c = self.cols
        for name in ("samples", "battery_sum", "battery_min", "battery_max", "solar_sum", "load_sum",
                     "grid_sum", "last_soc"):
            c[name][row] = getattr(window, name)
        c["last_event"][row], c["last_seq"][row] = window.last_key
        if window.seen_base >= 0:
            self._hold_seen(row, window.seen_base, window.seen_mask)

    def state(self, n: int) -> tuple[dict[str, Any], tuple[tuple[int, int, int], ...]]:
        """The first ``n`` rows and the sequence numbers seen, for a snapshot."""
        held = np.flatnonzero(self.cols["seen_base"][:n] != _NO_BASE).tolist()
        return ({name: column[:n].copy() for name, column in self.cols.items() if name not in _SEEN},
                tuple((row, *seen) for row in held if (seen := self._seen(row)) is not None))

    @classmethod
    def from_state(cls, size: int,
                   state: tuple[dict[str, Any], tuple[tuple[int, int, int], ...]]) -> MinuteColumns:
        columns, seen = state
        minute = cls(size)
        for name, column in columns.items():
            minute.cols[name][:len(column)] = column
        for row, base, mask in seen:
            minute._hold_seen(row, base, mask)
        return minute
