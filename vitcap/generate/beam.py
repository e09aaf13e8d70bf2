"""Batched beam search: every image's beams decoded as one batch, with a vectorised pool of finished hypotheses."""

from __future__ import annotations

import torch
from torch import Tensor

from vitcap.generate.config import GenerationConfig
from vitcap.generate.outputs import Generated, HypothesisTensors, length_norm
from vitcap.generate.state import DecodeState
from vitcap.models import TextDecoder

__all__ = ["beam_search"]


@torch.inference_mode()
def beam_search(
    decoder: TextDecoder,
    memory: Tensor,
    config: GenerationConfig,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Batched beam search: ``B`` images x ``k`` beams decoded as one ``(B * k)``-row batch.

    Each image's beams share its cross-attention keys/values (grouped rows, no copies); the self-attention cache
    follows the beams with ``cache.reorder``. At every step each image keeps the ``2k`` best continuations of its
    beams: those ending in eos among the top ``k`` (and, at ``max_length``, all of the top ``k``) enter the
    image's pool of ``k`` finished hypotheses (the role of Hugging Face's ``BeamHypotheses`` heap), and the ``k``
    best others continue. The bookkeeping is vectorised over images and beams, pool included (like Hugging Face's
    current beam search), so a step has one host sync: "did anything finish, is every image done", read together.
    An image is done, and its pool frozen, once no live beam can beat its worst finished hypothesis *at the beam's
    current length* (Hugging Face's default ``early_stopping=False`` heuristic; exact for ``length_penalty <= 0``),
    so ``num_beams=1`` reproduces greedy decoding.

    Args:
        decoder: The text decoder.
        memory: Image tokens ``(B, N, Dm)``.
        config: Beam width, length penalty, limits, processors.
        bos_id: Start token.
        eos_id: End token.
        pad_id: Padding token.
    """
    k = config.num_beams
    state = DecodeState(decoder, memory, k, config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    B, N, _ = memory.shape
    L, V, alpha = config.max_length, decoder.vocab_size, config.length_penalty
    R, device = B * k, memory.device
    # The k beams of an image start as copies of one; only beam 0 may expand, or step 0 would pick k identical
    # continuations.
    beam_sum = torch.full((B, k), float("-inf"), device=device)  # (B, k) running log-prob, sorted best first
    beam_sum[:, 0] = 0.0

    # Finished pool per image, sorted best first; -inf score = empty slot.
    pool = HypothesisTensors(
        seqs=torch.full((B, k, L), pad_id, dtype=torch.long, device=device),
        token_lp=torch.zeros(B, k, L, device=device),
        length=torch.zeros(B, k, dtype=torch.long, device=device),
        total=torch.zeros(B, k, device=device),
        score=torch.full((B, k), float("-inf"), device=device),
        ended=torch.zeros(B, k, dtype=torch.bool, device=device),
        attn=torch.zeros(B, k, L, N, device=device) if config.output_attentions else None,
    )
    done = torch.zeros(B, dtype=torch.bool, device=device)

    num_cand = min(2 * k, k * V)  # at most k candidates end in eos (one per beam), so k others remain
    row_offset = torch.arange(B, device=device)[:, None] * k  # (B, 1) first row of each image
    rank = torch.arange(num_cand, device=device)
    for t in range(L):
        logprobs, weights = state.step(t)  # (R, V), (R, N) or None
        cand = (beam_sum.view(R, 1) + logprobs).view(B, k * V)
        cand_sum, cand_idx = cand.topk(num_cand, dim=1)  # (B, 2k), best first
        cand_tok = cand_idx % V
        cand_row = cand_idx // V + row_offset  # (B, 2k) flat row each candidate extends
        cand_lp = logprobs.view(-1).gather(0, (cand_row * V + cand_tok).view(-1)).view(B, num_cand)

        # Finished candidates: only the top k may finish (the others exist to keep k beams alive, as in HF).
        is_eos = cand_tok == eos_id
        last = t == L - 1
        denom = length_norm(torch.tensor(t + 1, device=device), alpha)
        ends = (is_eos | last) & (rank < k) & torch.isfinite(cand_sum) & ~done[:, None]  # (B, 2k)
        new_score = torch.where(ends[:, :k], cand_sum[:, :k] / denom, float("-inf"))  # (B, k)
        merged_score, keep = torch.cat([pool.score, new_score], dim=1).topk(k, dim=1)  # (B, k)

        if last:
            any_end, all_done = True, True
        else:
            # Live beams: the k best candidates that did not end (dead beams carry -inf and never finish).
            beam_sum, pick = cand_sum.masked_fill(is_eos, float("-inf")).topk(k, dim=1)  # (B, k)
            origin = cand_row.gather(1, pick).view(R)  # (R,) row each new beam continues
            # HF's is_done: the best live beam, scored at its current length, cannot beat the worst finished
            # one. An empty slot (-inf) keeps the image open unless every beam is dead too.
            done = done | (merged_score[:, -1] >= beam_sum[:, 0] / denom)
            any_end, all_done = torch.stack([ends.any(), done.all()]).tolist()  # the one host sync per step

        if any_end:  # merge the new finished hypotheses into the pool (histories before this step's reorder)
            top_rows = cand_row[:, :k].reshape(-1)  # (B*k,)
            seqs, token_lp, attn = state.histories(top_rows)  # (B*k, L), (B*k, L), (B*k, L, N) or None
            seqs[:, t] = cand_tok[:, :k].reshape(-1)
            token_lp[:, t] = cand_lp[:, :k].reshape(-1)
            if attn is not None and weights is not None:
                attn[:, t] = weights.index_select(0, top_rows)
            finished = HypothesisTensors(
                seqs.view(B, k, L),
                token_lp.view(B, k, L),
                torch.full_like(pool.length, t + 1),
                cand_sum[:, :k],
                new_score,
                is_eos[:, :k],
                None if attn is None else attn.view(B, k, L, N),
            )
            pool = pool.merge(finished, keep)
        if all_done:
            break

        state.reorder(origin)
        token_weights = None if weights is None else weights.index_select(0, origin)
        state.append(t, cand_tok.gather(1, pick).view(R), cand_lp.gather(1, pick).view(R), token_weights)

    return pool.head(min(config.num_return_sequences, k)).to_generated()
