"""Calibration and out-of-distribution scores for the classifier's logits.

* :func:`fit_temperature` — temperature scaling (one scalar ``T``, ``p = softmax(z / T)``),
  fitted by L-BFGS on the negative log-likelihood of held-out logits. Frames of one run
  are not exchangeable: fit on whole validation runs, never on frames of training runs.
* :func:`expected_calibration_error` — top-label ECE with 15 equal-width confidence bins.
* :func:`energy_score` — ``-T * logsumexp(z / T)``; higher means more out-of-distribution.
* :func:`ood_threshold` and :func:`fpr_at_tpr` — the threshold that keeps a given fraction
  (95 %) of in-distribution frames, and the fraction of OOD frames that pass it.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def _logits(z) -> torch.Tensor:
    z = torch.as_tensor(np.asarray(z) if not torch.is_tensor(z) else z, dtype=torch.float64)
    if z.dim() < 1:
        raise ValueError("logits must have a class axis.")
    return z.reshape(-1, z.shape[-1])


def _labels(y, n: int) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y, dtype=torch.int64)
    y = y.reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"labels must have one entry per row of logits ({n}). Got {y.shape[0]}.")
    return y


def fit_temperature(logits, labels, *, max_iter: int = 200,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Fit the temperature that minimises the NLL of ``softmax(logits / T)``.

    Parameters
    ----------
    logits : array_like
        ``(..., C)`` held-out logits.
    labels : array_like
        Matching int class indices; entries < 0 (unlabelled, padding) are ignored.
    max_iter : int
        L-BFGS iterations.
    bounds : (float, float)
        The result is clipped into this range.

    Returns
    -------
    float
        The temperature ``T`` (> 0). 1.0 when there are no labelled rows.

    Examples
    --------
    >>> z = torch.tensor([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    >>> y = torch.tensor([0, 1, 0, 1])   # overconfident on row 2 -> T > 1
    >>> fit_temperature(z, y) > 1
    True
    """
    z = _logits(logits)
    y = _labels(labels, z.shape[0])
    keep = y >= 0
    z, y = z[keep], y[keep]
    if z.shape[0] == 0:
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / torch.exp(log_t), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(torch.exp(log_t.detach()))
    if not math.isfinite(t):
        return 1.0
    return float(min(max(t, bounds[0]), bounds[1]))


def softmax_t(logits, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)`` as a float64 numpy array."""
    z = torch.as_tensor(np.asarray(logits) if not torch.is_tensor(logits) else logits,
                        dtype=torch.float64)
    return torch.softmax(z / float(temperature), dim=-1).numpy()


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """Top-label expected calibration error.

    ``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` with ``n_bins`` equal-width bins of the
    top-class confidence on (0, 1] (bin ``b`` holds confidences in ``(b/n, (b+1)/n]``).

    Parameters
    ----------
    probs : array_like
        ``(..., C)`` probabilities.
    labels : array_like
        Matching int class indices; entries < 0 are ignored.
    n_bins : int
        Number of bins (15 by convention).

    Returns
    -------
    float
        ECE in [0, 1]; NaN when no row is labelled.

    Examples
    --------
    >>> expected_calibration_error([[0.8, 0.2], [0.8, 0.2]], [0, 1])   # conf 0.8, acc 0.5
    0.3
    """
    p = np.asarray(probs, dtype=float)
    p = p.reshape(-1, p.shape[-1])
    y = np.asarray(labels).reshape(-1).astype(int)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"labels must have one entry per row of probs ({p.shape[0]}). "
                         f"Got {y.shape[0]}.")
    keep = y >= 0
    p, y = p[keep], y[keep]
    if len(y) == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for k in range(n_bins):
        sel = b == k
        if sel.any():
            ece += sel.sum() / len(y) * abs(correct[sel].mean() - conf[sel].mean())
    return float(round(ece, 12))


def energy_score(logits, temperature: float = 1.0) -> np.ndarray:
    """Energy OOD score ``-T * logsumexp(logits / T)`` over the class axis.

    In-distribution inputs get low (very negative) energy; higher means more unusual.

    Examples
    --------
    >>> float(energy_score([0.0, 0.0]))   # -log 2
    -0.6931471805599453
    """
    z = torch.as_tensor(np.asarray(logits) if not torch.is_tensor(logits) else logits,
                        dtype=torch.float64)
    t = float(temperature)
    return (-t * torch.logsumexp(z / t, dim=-1)).numpy()


def ood_threshold(scores_in, tpr: float = 0.95) -> float:
    """Smallest score threshold that keeps at least ``tpr`` of in-distribution scores.

    A frame is in-distribution when ``score <= threshold``.

    Examples
    --------
    >>> ood_threshold(np.arange(1, 21), 0.95)   # 19 of 20 values are <= 19
    19.0
    """
    s = np.sort(np.asarray(scores_in, dtype=float).reshape(-1))
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("ood_threshold needs at least one finite in-distribution score.")
    if not 0 < tpr <= 1:
        raise ValueError(f"The 'tpr' parameter must be in (0, 1]. Got {tpr}.")
    k = max(int(math.ceil(tpr * len(s) - 1e-9)), 1)
    return float(s[k - 1])


def fpr_at_tpr(scores_in, scores_out, tpr: float = 0.95) -> float:
    """FPR at ``tpr`` TPR: fraction of OOD scores accepted by :func:`ood_threshold`.

    Parameters
    ----------
    scores_in, scores_out : array_like
        OOD scores (e.g. :func:`energy_score`) of in-distribution and OOD frames.
    tpr : float
        Fraction of in-distribution frames that must be accepted.

    Examples
    --------
    >>> fpr_at_tpr(np.arange(1, 21), [0.5, 10.0, 19.0, 25.0])   # 3 of 4 are <= 19
    0.75
    """
    thr = ood_threshold(scores_in, tpr)
    out = np.asarray(scores_out, dtype=float).reshape(-1)
    out = out[np.isfinite(out)]
    if len(out) == 0:
        raise ValueError("fpr_at_tpr needs at least one finite OOD score.")
    return float(np.mean(out <= thr))
