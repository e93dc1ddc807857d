"""Feature encoding: a `Table` frame → the design matrix X of science.md §1–2.

x = [z(row), 1] / scale, with `scale` the largest such row norm over the fit rows, so every
training row has ‖x‖₂ ≤ 1 (needed by the certified-removal bounds, science.md §2). z standardises
numeric columns and clips them to ±CLIP standard deviations; one-hot columns are centred but not
divided by their std: a rare category would otherwise reach tens of standard deviations, set the
common `scale` for every row and leave the bulk of the data with tiny norms (measured on Adult:
74.6 % test accuracy, the majority-class rate, instead of 85 %).

A revoked feature (science.md §1, "features") keeps its columns, but they are exactly 0 — the
training mean after standardising — in every row, at fit and at predict time. Keeping the columns
keeps θ's dimension, so an unlearned model and the original stay comparable.

Categories are known by a keyed hash, never by their value: HMAC-SHA256 under a random salt drawn
at fit time and kept with the encoder, so a saved model (MLflow artifact, cache, reference job)
holds no raw category — a text-like column may hold e-mails or keys — yet still encodes a new row
by hashing its value. Columns are named by position (`city=#2`) and ordered by an unkeyed hash of
the value — the same on every fit, so the same data trains the same model, yet a column's place
does not say where its value sorts among the others. After an erasure the categories that no
longer occur in the data are forgotten (`keep_categories_of`): their columns stay, but nothing
encodes to them any more, and their hashes are gone with the values.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from unlearning.errors import UnlearnError
from unlearning.tabular.data import MISSING_CATEGORY, Table

BIAS_COLUMN = "(bias)"
CLIP = 3.0  # numeric values beyond ±3 std are clipped (heavy tails would set `scale` otherwise)
SALT_BYTES = 16


@dataclass(frozen=True)
class Encoder:
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    # per categorical feature, the keyed hash of each category in column order; None where a
    # category was forgotten (its column stays and nothing encodes to it)
    categories: dict[str, list[str | None]]
    columns: tuple[str, ...]  # derived columns; the last one is the bias
    mean: tuple[float, ...]  # per derived column except the bias
    std: tuple[float, ...]  # idem; 1 where the training std is 0
    scale: float  # max ‖[standardised, 1]‖₂ over the fit rows
    labels: tuple[str, ...]
    salt: str  # hex; the key of the category hashes
    revoked: tuple[str, ...] = field(default=())

    @property
    def d(self) -> int:
        return len(self.columns)

    @classmethod
    def fit(cls, table: Table, salt: bytes | None = None) -> Encoder:
        """Fit on the table's training rows only (test rows must not leak into the scaling).
        `salt`: the key of the category hashes (default: drawn at random)."""
        salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
        train = table.frame[table.train_mask()]
        categories = {}
        for f in table.categorical:
            values = sorted({str(v) for v in train[f].dropna().unique()}, key=_column_order)
            categories[f] = [category_key(salt, v) for v in values]
        columns = _derived_columns(table.features, table.categorical, categories)
        unfitted = cls(
            features=table.features,
            categorical=table.categorical,
            categories=categories,
            columns=columns,
            mean=(0.0,) * (len(columns) - 1),
            std=(1.0,) * (len(columns) - 1),
            scale=1.0,
            labels=table.labels,
            salt=salt.hex(),
            revoked=table.revoked,
        )
        raw = unfitted._raw(train)  # (n_train, d-1), NaN = missing numeric value
        return unfitted.refit(raw)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, d) float64 design matrix; rows of the fit data have ‖x‖₂ ≤ 1."""
        return self.transform_raw(self._raw(frame))

    def transform_with_numbers(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """`transform(frame)` and the numeric features' values as given, (n, k) with NaN where
        missing or revoked (`numbers`): what `raw_from` needs beside X, read in the same pass."""
        raw = self._raw(frame)
        return self.transform_raw(raw), raw[:, self.numeric_columns()]

    def transform_raw(self, raw: np.ndarray) -> np.ndarray:
        """(n, d) design matrix from values before standardising ((n, d-1), `_raw`/`raw_from`)."""
        x = np.empty((len(raw), self.d))
        self._standardise(raw, out=x[:, :-1])
        x[:, -1] = 1.0
        x /= self.scale
        return x

    def numeric_columns(self) -> list[int]:
        """Columns of X that hold a numeric feature, in feature order (the columns of `numbers`)."""
        return [j for f in self.features if f not in self.categorical for j in self.derived_indices(f)]

    def raw_from(self, X: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        """(n, d-1) values before standardising, from rows this map encoded: one-hot columns read
        back from X (never clipped: a centred 0/1 is within ±1), numeric ones from `numbers` (X lost
        clipped and missing values), revoked ones NaN. What `refit` and `transform_raw` take."""
        raw = self.one_hot_indicators(X)[:, :-1].astype(np.float64)
        raw[:, self.numeric_columns()] = numbers
        for f in self.revoked:
            raw[:, self.derived_indices(f)] = np.nan
        return raw

    def refit(self, raw: np.ndarray, revoking: Iterable[str] = ()) -> Encoder:
        """The same columns with the statistics (mean, std, scale) of the rows `raw` (`raw_from`
        of D', the data after an erasure), exactly as `fit` computes them: a model version must
        not keep statistics of records erased from it (n·mean − Σ(D') gives a deleted row back).
        `revoking`: features D' revokes that this map still encodes: their columns keep this map's
        statistics (the rows of D, before, are encoded with them) and count as 0 in `scale`."""
        return self._refit_standardised(raw, None, revoking)[0]

    def refitted(self, raw: np.ndarray, kept: np.ndarray | None, revoking: Iterable[str] = ()) -> tuple[Encoder, np.ndarray]:
        """`refit(raw[kept], revoking)` and `transform_raw(raw)` under it, every row of `raw`
        standardised once (`kept`: (n,) bool, None = every row). What an erasure needs: the map of
        D' (the rows kept) and D encoded with it, the rows it deletes included."""
        x = np.empty((len(raw), self.d))
        fitted, _ = self._refit_standardised(raw, kept, revoking, out=x[:, :-1])
        x[:, -1] = 1.0
        x /= fitted.scale
        return fitted, x

    def _refit_standardised(self, raw: np.ndarray, kept: np.ndarray | None,
                            revoking: Iterable[str], out: np.ndarray | None = None) -> tuple[Encoder, np.ndarray]:
        """(the map refitted on raw[kept], every row of `raw` standardised with it, into `out` if given)."""
        held = [j for f in revoking for j in self.derived_indices(f)]
        mean, std = self._moments_of(raw, kept, held)
        fitted = replace(self, mean=mean, std=std)
        z = fitted._standardise(raw, out=out)  # the revoking columns too: D's rows keep them until the request zeroes them
        squares = z**2
        squares[:, held] = 0.0
        norms = _row_norms(squares)
        return replace(fitted, scale=_max_norm(norms if kept is None else norms[kept])), z

    def _moments_of(self, raw: np.ndarray, kept: np.ndarray | None,
                    held: list[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per column of `raw[kept]` ((n, d-1), `_raw`/`raw_from`; None: every row): a one-hot
        column's mean is the share of rows holding its category and its std 1; every other
        column's mean and std over its non-missing values (`_moments`); `held` columns keep this
        map's statistics. A one-hot column is 0/1 with no missing value, so its count is a sum of
        integers, exact in any order: all rows' less the rows not kept (a few, after an erasure)."""
        live = [j for f in self.categorical if f not in self.revoked for j in self.derived_indices(f)]
        other = np.setdiff1d(np.arange(raw.shape[1]), live)
        mean, std = np.zeros(raw.shape[1]), np.ones(raw.shape[1])
        rows = len(raw) if kept is None else int(kept.sum())
        if live and rows:
            counts = raw.sum(axis=0)[live] - (raw[~kept].sum(axis=0)[live] if kept is not None else 0.0)
            mean[live] = counts / rows
        numbers = raw[:, other] if kept is None else raw[:, other][kept]
        # one layout whatever the indexing gave: the sums' order, and so their last bit, follows it
        mean[other], std[other] = _moments(np.ascontiguousarray(numbers))
        mean[held], std[held] = np.asarray(self.mean)[held], np.asarray(self.std)[held]
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)

    def same_statistics(self, other: Encoder) -> bool:
        """Whether `other` holds this map's statistics bit for bit (mean, std, scale): a refit on
        the same rows gives them, a refit after a deletion or revocation does not."""
        return (self.mean, self.std, self.scale) == (other.mean, other.std, other.scale)

    def change_to(self, target: Encoder) -> tuple[np.ndarray, np.ndarray, float]:
        """(a, c, s/s′): how a row encoded with this map reads in `target` (same columns, other
        statistics), wherever neither map clips or imputes its values:
            x′ⱼ = aⱼ·xⱼ + cⱼ·x_b,  aⱼ = σⱼs/(σ′ⱼs′),  cⱼ = (μⱼ − μ′ⱼ)s/(σ′ⱼs′),  x′_b = (s/s′)·x_b.
        Revoked columns are 0 under both maps (a = 1, c = 0)."""
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        ratio = self.scale / target.scale
        a = std * ratio / np.asarray(target.std)
        c = (mean - np.asarray(target.mean)) * ratio / np.asarray(target.std)
        for f in self.revoked:
            a[self.derived_indices(f)], c[self.derived_indices(f)] = 1.0, 0.0
        return a, c, ratio

    def reexpressed(self, theta: torch.Tensor, target: Encoder) -> torch.Tensor:
        """θ for the map `target` giving every row the logits θ gives it under this map wherever
        `change_to` holds: θ′ⱼ = θⱼ/aⱼ and θ′_b = (s′/s)·(θ_b − Σⱼ θ′ⱼcⱼ). The rows where the maps
        differ otherwise (clipped or missing values) are left to the Newton step."""
        a, c, ratio = self.change_to(target)
        shape = (-1,) + (1,) * (theta.dim() - 1)
        weights = theta[:-1] / torch.as_tensor(a, dtype=theta.dtype).reshape(shape)
        bias = (theta[-1] - (weights * torch.as_tensor(c, dtype=theta.dtype).reshape(shape)).sum(dim=0)) / ratio
        return torch.cat([weights, bias.unsqueeze(0)])

    def encode_labels(self, values: Iterable) -> np.ndarray:
        """(n,) int64 indices into `labels`."""
        index = {label: i for i, label in enumerate(self.labels)}
        texts = [str(v).strip() for v in values]
        unknown = [t for t in texts if t not in index]
        if unknown:
            raise UnlearnError(
                f"{len(unknown)} labels are not in the label set {list(self.labels)}; "
                "use one of those labels"
            )
        return np.array([index[t] for t in texts], dtype=np.int64)

    def decode_labels(self, idx: Iterable[int]) -> list[str]:
        return [self.labels[int(i)] for i in np.asarray(idx).ravel()]

    def derived_indices(self, feature: str) -> list[int]:
        """Columns of X that come from `feature`."""
        if feature not in self.features:
            raise UnlearnError(
                f"unknown feature '{feature}'; valid features: {', '.join(self.features)}"
            )
        start = 0
        for f in self.features:
            width = self._width(f)
            if f == feature:
                return list(range(start, start + width))
            start += width
        raise AssertionError("unreachable")

    def with_revoked(self, features: Iterable[str]) -> Encoder:
        """Same fit, more features neutralised (their columns become 0)."""
        new = [f for f in dict.fromkeys(features) if f not in self.revoked]
        for f in new:
            self.derived_indices(f)  # validates the name
        # the columns of a revoked feature are 0 whatever its value: its categories and statistics
        # serve no more (and would keep what the feature held: one-hot means are category shares)
        forgotten = {f: [None] * len(self.categories[f]) for f in new if f in self.categorical}
        cols = {j for f in new for j in self.derived_indices(f)}
        mean = tuple(0.0 if j in cols else v for j, v in enumerate(self.mean))
        std = tuple(1.0 if j in cols else v for j, v in enumerate(self.std))
        return replace(self, revoked=self.revoked + tuple(new), categories={**self.categories, **forgotten},
                       mean=mean, std=std)

    def keep_categories_of(self, frame: pd.DataFrame) -> Encoder:
        """Same fit, minus the categories no row of `frame` holds (after an erasure: values only
        removed records had). Their columns stay, so θ keeps its dimension, and encode like an
        unseen category; the rows of `frame` encode exactly as before."""
        kept = {}
        for f, keys in self.categories.items():
            present = set(self._keys_of(frame[f])) if f in frame.columns else set()
            kept[f] = [k if k in present else None for k in keys]
        return replace(self, categories=kept)

    def category_counts(self, frame: pd.DataFrame) -> np.ndarray:
        """(d,) int64: per one-hot column, how many rows of `frame` hold its category (0 for numeric,
        bias, revoked and forgotten columns). What `keep_categories_of(frame)` decides from; kept
        with a model version for its training rows, so that a request can update it by its own rows."""
        counts = np.zeros(self.d, dtype=np.int64)
        for f in self.categorical:
            if f in self.revoked or f not in frame.columns:
                continue
            held = self._keys_of(frame[f]).value_counts()
            for j, key in zip(self.derived_indices(f), self.categories[f]):
                if key is not None:
                    counts[j] = int(held.get(key, 0))
        return counts

    def one_hot_indicators(self, X: np.ndarray) -> np.ndarray:
        """(n, d) bool from encoded rows: which one-hot columns' categories each row holds (the
        inverse of `transform` on those columns; False for every other column)."""
        cols = [j for f in self.categorical if f not in self.revoked for j in self.derived_indices(f)]
        # held ⇔ x·scale·std + mean > 1/2, which a 0/1 value misses by 1/(2·scale); +∞ elsewhere
        threshold = np.full(X.shape[1], np.inf)
        threshold[cols] = (0.5 - np.asarray(self.mean)[cols]) / (self.scale * np.asarray(self.std)[cols])
        return X > threshold

    def forget_absent(self, counts: np.ndarray) -> Encoder:
        """`keep_categories_of` from per-column counts (`category_counts` of the data): the
        categories no row holds any more are forgotten."""
        kept = {f: [k if k is not None and counts[j] > 0 else None for k, j in zip(keys, self.derived_indices(f))]
                for f, keys in self.categories.items()}
        return replace(self, categories=kept)

    def to_dict(self) -> dict:
        return {
            "features": list(self.features),
            "categorical": list(self.categorical),
            "categories": {f: list(c) for f, c in self.categories.items()},
            "columns": list(self.columns),
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": self.scale,
            "labels": list(self.labels),
            "salt": self.salt,
            "revoked": list(self.revoked),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Encoder:
        categories = {f: list(c) for f, c in d["categories"].items()}
        columns = tuple(d["columns"])
        salt = d.get("salt")
        if salt is None:  # saved before categories were hashed: hash them now, in column order
            key = secrets.token_bytes(SALT_BYTES)
            categories = {f: [category_key(key, str(v)) for v in c] for f, c in categories.items()}
            columns = _derived_columns(tuple(d["features"]), tuple(d["categorical"]), categories)
            salt = key.hex()
        return cls(
            features=tuple(d["features"]),
            categorical=tuple(d["categorical"]),
            categories=categories,
            columns=columns,
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            scale=float(d["scale"]),
            labels=tuple(d["labels"]),
            salt=salt,
            revoked=tuple(d.get("revoked", ())),
        )

    # -- internals ------------------------------------------------------------------------------

    def _width(self, feature: str) -> int:
        return len(self.categories[feature]) if feature in self.categorical else 1

    def _raw(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, d-1) before standardising: numbers (NaN = missing) and one-hot categories.
        Revoked features give NaN columns here; `_standardise` turns them into 0."""
        missing = [f for f in self.features if f not in self.revoked and f not in frame.columns]
        if missing:
            raise UnlearnError(
                f"feature column '{missing[0]}' is missing from the data "
                f"({len(missing)} missing); give all of: {', '.join(self.features)}"
            )
        blocks = []
        for f in self.features:
            if f in self.revoked:
                blocks.append(np.full((len(frame), self._width(f)), np.nan))
            elif f in self.categorical:
                blocks.append(_one_hot(self._keys_of(frame[f]), self.categories[f]))
            else:
                blocks.append(_numbers(frame[f], f)[:, None])
        if not blocks:
            return np.zeros((len(frame), 0))
        return np.hstack(blocks).astype(np.float64)

    def _keys_of(self, values: pd.Series) -> pd.Series:
        """The keyed hash of each value (missing and empty values are the missing category)."""
        text = values.astype("str").str.strip()
        text = text.mask(text.isna() | (text == ""), MISSING_CATEGORY)
        salt = bytes.fromhex(self.salt)
        keys = {v: category_key(salt, v) for v in pd.unique(text)}  # each distinct value once
        return text.map(keys)

    def _standardise(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(raw − mean)/std, clipped at ±CLIP, missing values 0 (the training mean), revoked
        features 0; into `out` (n, d-1) if given."""
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        z = np.subtract(raw, mean, out=out)
        np.divide(z, std, out=z)
        # Only numeric columns can be missing or beyond ±CLIP; a one-hot 0/1 can only where its std
        # would let it (never with the std of 1 a fit gives): the same values as clipping every
        # column, two passes over the one-hot columns fewer
        wild = self._clipped_columns(mean, std)
        if wild:
            part = z[:, wild]
            np.clip(part, -CLIP, CLIP, out=part)
            # A missing number is replaced by the training mean, i.e. 0 after standardising.
            part[np.isnan(part)] = 0.0
            z[:, wild] = part
        for f in self.revoked:
            z[:, self.derived_indices(f)] = 0.0
        return z

    def _clipped_columns(self, mean: np.ndarray, std: np.ndarray) -> list[int]:
        """Columns whose standardised values may be missing or beyond ±CLIP: the numeric ones, and
        any one-hot column whose 0 or 1 lies more than CLIP deviations from its mean."""
        numeric = self.numeric_columns()
        one_hot = np.setdiff1d(np.arange(len(mean)), numeric)
        reach = np.maximum(np.abs(mean[one_hot]), np.abs(1.0 - mean[one_hot])) / std[one_hot]
        return sorted([*numeric, *one_hot[~(reach <= CLIP)].tolist()])


def category_key(salt: bytes, value: str) -> str:
    """HMAC-SHA256(salt, value), hex: how the encoder knows a category."""
    return hmac.new(salt, value.encode("utf-8"), hashlib.sha256).hexdigest()


def _column_order(value: str) -> bytes:
    """Sort key of a category's column (never stored)."""
    return hashlib.sha256(value.encode("utf-8")).digest()


def _derived_columns(
    features: tuple[str, ...], categorical: tuple[str, ...], categories: dict[str, list]
) -> tuple[str, ...]:
    """Column names; a one-hot column is named by its position, never by its category."""
    columns: list[str] = []
    for f in features:
        if f in categorical:
            columns.extend(f"{f}=#{j}" for j in range(len(categories[f])))
        else:
            columns.append(f)
    return (*columns, BIAS_COLUMN)


def _one_hot(keys: pd.Series, categories: list[str | None]) -> np.ndarray:
    """(n, k) 0/1 from the values' keyed hashes; an unseen or forgotten category is all zeros."""
    index = {key: j for j, key in enumerate(categories) if key is not None}
    codes = keys.map(index).fillna(-1).to_numpy(dtype=np.int64)  # -1 = unseen
    out = np.zeros((len(keys), len(categories)))
    rows = np.flatnonzero(codes >= 0)
    out[rows, codes[rows]] = 1.0
    return out


def _numbers(values: pd.Series, feature: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return pd.to_numeric(values).to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        raise UnlearnError(
            f"feature '{feature}' must be numeric but has text values; fix the data"
        ) from None


def _moments(raw: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-column mean and std over non-missing values; empty or constant columns get (0, 1)."""
    observed = ~np.isnan(raw)
    count = observed.sum(axis=0)
    filled = np.where(observed, raw, 0.0)
    mean = np.divide(filled.sum(axis=0), count, out=np.zeros(raw.shape[1]), where=count > 0)
    centred = np.where(observed, raw - mean, 0.0)
    var = np.divide((centred**2).sum(axis=0), count, out=np.zeros(raw.shape[1]), where=count > 0)
    std = np.sqrt(var)
    # Rounding in the mean leaves a constant column a tiny nonzero std and a mean a hair off
    # its value: use the value itself, so the column encodes to exactly 0.
    constant = (std <= 1e-12 * np.maximum(1.0, np.abs(mean))) & (count > 0)
    if constant.any():
        mean[constant] = np.nanmax(raw[:, constant], axis=0)
    std[std <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _row_norms(squares: np.ndarray) -> np.ndarray:
    """‖[z_i, 1]‖₂ per row, from the rows' squared entries."""
    return np.sqrt(squares.sum(axis=1) + 1.0)


def _max_norm(norms: np.ndarray) -> float:
    """The largest row norm — at least 1, so dividing by it never scales rows up."""
    return float(norms.max()) if len(norms) else 1.0
