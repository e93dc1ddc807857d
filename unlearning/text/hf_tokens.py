"""Token-level work on a Hugging Face causal LM's text (unlearning.text.hf): which token windows a
redaction touches, candidates' log-perplexities, and generation with the KV cache.

Split from unlearning.text.hf, which loads, wraps, fine-tunes and saves checkpoints: these functions
need only the wrapped model (`HFCausalLM`: forward(x, state) → (logits, state), `config`) and its
`TokenizerVocab` (encode_with_offsets, decode), and no `transformers` import at all.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch

from unlearning.errors import UnlearnError

if TYPE_CHECKING:
    from unlearning.text.hf import HFCausalLM, TokenizerVocab


# --- token windows of a redaction ---------------------------------------------------------------

def token_spans(offsets: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(n,) bool: which tokens (character `offsets`, (n, 2)) overlap a character span [start, end)."""
    hit = torch.zeros(len(offsets), dtype=torch.bool)
    for start, end in spans:
        hit |= (offsets[:, 0] < end) & (offsets[:, 1] > start)
    return hit


def windows_over_tokens(n_tokens: int, hit: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(m,) bool: which windows (charlm.window_starts offsets) of n_tokens tokens hold a hit token."""
    from unlearning.text.charlm import window_starts

    starts = window_starts(n_tokens, seq_len)
    positions = hit.nonzero().squeeze(1)
    if not len(positions) or not len(starts):
        return torch.zeros(len(starts), dtype=torch.bool)
    return ((positions[None, :] >= starts[:, None]) & (positions[None, :] < starts[:, None] + seq_len + 1)).any(1)


def affected_token_windows(vocab: TokenizerVocab, text: str, text_tilde: str, spans: Sequence[tuple[int, int]],
                           seq_len: int):
    """The WindowRequest of a redaction for a tokenized model. Redaction keeps character positions
    but not the token count, so Z (windows of `text` holding a token of a span) and Z̃ (windows of
    `text_tilde` holding a token of the same spans) need not pair up one to one; `d_prime` carries
    the windows of the tokenized D′, which is what the request's `apply` returns (the windows a
    re-fine-tuned reference trains on)."""
    from unlearning.text import charlm
    from unlearning.text.deep_influence import WindowRequest

    if len(text_tilde) != len(text):
        raise UnlearnError(f"the redacted text has {len(text_tilde)} characters but the training text "
                           f"{len(text)}: redaction must preserve length so spans line up")
    for start, end in spans:
        if not 0 <= start < end <= len(text):
            raise UnlearnError(f"span ({start}, {end}) is outside the text of {len(text)} characters")
    ids, offsets = vocab.encode_with_offsets(text)
    ids_t, offsets_t = vocab.encode_with_offsets(text_tilde)
    hit = token_spans(offsets, spans)  # (n,)
    index = windows_over_tokens(len(ids), hit, seq_len).nonzero().squeeze(1)
    windows_t = charlm.windows(ids_t, seq_len)
    tilde = windows_over_tokens(len(ids_t), token_spans(offsets_t, spans), seq_len).nonzero().squeeze(1)
    positions = charlm.window_starts(len(ids), seq_len)[index, None] + torch.arange(1, seq_len + 1)  # (k, T)
    return WindowRequest(index=index, Z=charlm.windows(ids, seq_len)[index], Z_tilde=windows_t[tilde],
                         d_prime=windows_t, secret_mask=hit[positions])


def touched_window_count(vocab: TokenizerVocab, text: str, spans: Sequence[tuple[int, int]], seq_len: int) -> int:
    ids, offsets = vocab.encode_with_offsets(text)
    return int(windows_over_tokens(len(ids), token_spans(offsets, spans), seq_len).sum())


# --- scoring and generation ---------------------------------------------------------------------

@torch.no_grad()
def log_perplexities(model: HFCausalLM, vocab: TokenizerVocab, prefix: str, candidates: Sequence[str],
                     batch: int = 256) -> torch.Tensor:
    """P(r) in bits for every candidate after `prefix`, (n,) float64: −Σ log₂ p over the tokens of
    prefix+r (tokenized together, as in training) that hold a character of r, each given the tokens
    before it. A token straddling the boundary (" 4" after "card:") counts whole, for every candidate
    alike. Sequences with the same token count run as one batch (no state is shared between them)."""
    if not prefix:
        raise ValueError("log-perplexity needs a non-empty prefix (the first token's context)")
    out = torch.zeros(len(candidates), dtype=torch.float64)
    model.eval()
    encoded = []
    for cand in candidates:
        ids, offsets = vocab.encode_with_offsets(prefix + cand)
        scored = offsets[:, 1] > len(prefix)
        first = int(scored.nonzero()[0]) if scored.any() else len(ids)
        encoded.append((ids, max(first, 1)))  # the first token has no context: never scored
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (ids, first) in enumerate(encoded):
        groups.setdefault((len(ids), first), []).append(i)
    limit = model.config["n_positions"]
    for (length, first), rows in groups.items():
        if first >= length:
            continue
        for lo in range(0, len(rows), batch):
            part = rows[lo:lo + batch]
            ids = torch.stack([encoded[i][0] for i in part])[:, -limit:]  # (b, L)
            first_kept = first - (length - ids.shape[1])
            ids = ids.to(next(model.parameters()).device)  # where the model computes (--device)
            logits, _ = model(ids[:, :-1])  # (b, L−1, V)
            logp = torch.log_softmax(logits.double(), dim=-1).gather(2, ids[:, 1:, None]).squeeze(2)  # (b, L−1)
            out[part] = (-logp[:, max(first_kept, 1) - 1:].sum(dim=1) / math.log(2.0)).cpu()
    return out


@torch.no_grad()
def generate(model: HFCausalLM, vocab: TokenizerVocab, prefix: str, n: int, greedy: bool = True,
             temperature: float = 1.0, seed: int = 0) -> str:
    """The text of the n tokens the model continues `prefix` with (n tokens hold at least n
    characters for a byte-level tokenizer but for byte fragments; callers ask for a margin)."""
    return continuations(model, vocab, [prefix], n, samples=0 if greedy else 1, seed=seed,
                         temperature=temperature, greedy_first=greedy)[0][-1]


@torch.no_grad()
def continuations(model: HFCausalLM, vocab: TokenizerVocab, prefixes: list[str], n: int, samples: int,
                  seed: int, temperature: float = 1.0, greedy_first: bool = True) -> list[list[str]]:
    """Per prefix: its greedy continuation (if `greedy_first`) then `samples` sampled ones, n tokens
    each, decoded; prefixes of one token count run as one batch with the KV cache."""
    model.eval()
    draws = int(greedy_first) + samples
    out: list[list[str]] = [[] for _ in prefixes]
    groups: dict[int, list[int]] = {}
    encoded = []
    n = min(n, model.config["n_positions"] - 1)  # prefix + continuation within the model's positions
    for i, p in enumerate(prefixes):
        ids = vocab.encode(p or "\n")
        ids = ids if len(ids) else vocab.encode("\n")
        encoded.append(ids[-(model.config["n_positions"] - n):])
        groups.setdefault(len(encoded[-1]), []).append(i)
    gen = torch.Generator().manual_seed(seed)
    for rows in groups.values():
        ids = torch.stack([encoded[i] for i in rows]).repeat_interleave(draws, 0)  # (b·D, P)
        greedy = (torch.arange(len(ids)) % draws == 0) & greedy_first
        # the model computes where it is (--device); sampling stays on the seeded CPU generator
        logits, state = model(ids.to(next(model.parameters()).device))
        chosen = []
        for _ in range(n):
            last = logits[:, -1].float().cpu()  # (b·D, V)
            last[:, len(vocab):] = -math.inf  # ids the tokenizer cannot decode
            sampled = torch.multinomial(torch.softmax(last / temperature, dim=-1), 1, generator=gen).squeeze(1)
            nxt = torch.where(greedy, last.argmax(dim=-1), sampled)
            chosen.append(nxt)
            logits, state = model(nxt[:, None].to(next(model.parameters()).device), state)
        text = torch.stack(chosen, dim=1)
        for r, row in enumerate(text):
            out[rows[r // draws]].append(vocab.decode(row.tolist()))
    return out
