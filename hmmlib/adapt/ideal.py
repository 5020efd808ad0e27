r"""Head and prompt tuning on the *ideal* model: exact inference stands in for a perfect masked LM.

* :class:`HeadConfig`: a linear head ``nn.Linear(V, 2)`` on :math:`G(x) = W p(x)` (``dataset.G``), trained
  by gradient descent on the cross-entropy, or set in closed form from the task
  (:meth:`IdealTuner.set_closed_form_head`, :math:`b = (W^+)^\top\mu`, chapter 3);
* :class:`FakeTokenPromptConfig`: ``prompt_len`` fake tokens with learnable non-negative emission rows
  :math:`u_j = \exp(\theta_j)` (or ``softplus``), trained jointly with the head through the
  prompted conditional (chapter 4's reweighting identity, :mod:`hmmlib.theory`)

  .. math::  G_u(x) = \frac{W\,(v\odot p)}{v^\top p},\qquad v = P(z_{-k..-1}\mid H_0=\cdot),

  which reuses the dataset's exact posterior :math:`p` (a step costs :math:`O(NKV)`, no
  forward-backward). :math:`p` is the posterior under :math:`\pi`; behind :math:`k` fake tokens
  :math:`H_0` has the prior :math:`m_0 = A^k\pi`, so :math:`v` is multiplied by :math:`m_0/\pi`
  (exactly :func:`hmmlib.theory.prompted_conditional`; a no-op when :math:`\pi` is stationary).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import theory
from ..hmm.model import HMM
from ._restarts import run_seed
from .base import Tuner
from .configs import FakeTokenPromptConfig, FineTuningConfig, HeadConfig, PrefixTuningConfig, PromptTuningConfig

__all__ = ["IdealTuner", "fake_token_rows", "ideal_prompted_features"]


def fake_token_rows(theta: torch.Tensor, positivity: str = "exp") -> torch.Tensor:
    """Non-negative emission rows ``u`` ``(k, K)`` from free parameters ``theta``.

    ``exp`` subtracts each row's maximum first (``G_u`` does not change when a row of ``u`` is
    scaled, so this only avoids overflow); ``softplus`` is ``log(1 + exp(theta))``.
    """
    if positivity == "exp":
        return torch.exp(theta - theta.detach().amax(-1, keepdim=True))
    if positivity == "softplus":
        return F.softplus(theta)
    raise ValueError(f"positivity must be 'exp' or 'softplus'; got {positivity!r}.")


def _inverse_positivity(u: torch.Tensor, positivity: str) -> torch.Tensor:
    u = u.clamp_min(torch.finfo(u.dtype).tiny ** 0.5)
    return u.log() if positivity == "exp" else torch.log(torch.expm1(u))


def _prior_ratio(hmm: HMM, k: int) -> torch.Tensor | None:
    """``m_0 / pi`` with ``m_0 = A^k pi`` (``None`` when it is 1 to rounding)."""
    m0 = theory.prompt_prior_h0(hmm, k)
    if torch.allclose(m0, hmm.pi, rtol=0, atol=1e-15):
        return None
    if ((hmm.pi == 0) & (m0 > 0)).any():
        raise ValueError("pi has zeros where A^k pi does not: the dataset's posterior cannot be reweighted; "
                         "use a start distribution with full support.")
    return torch.where(hmm.pi > 0, m0 / hmm.pi.clamp_min(torch.finfo(m0.dtype).tiny), torch.zeros_like(m0))


def ideal_prompted_features(hmm: HMM, theta: torch.Tensor, posterior: torch.Tensor, *, positivity: str = "exp",
                            prior_ratio: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`G_u(x)` ``(N, V)`` for fake tokens ``u = positivity(theta)`` ``(k, K)`` from the exact
    posteriors ``(N, K)`` of :math:`H_0` under :math:`\pi`; differentiable in ``theta``.
    ``prior_ratio`` is :math:`m_0/\pi` (see the module docstring; ``None`` means 1)."""
    v = theory.prompt_reweighting(hmm, fake_token_rows(theta, positivity))
    if prior_ratio is not None:
        v = v * prior_ratio
    return theory.reweight_posterior(posterior, v) @ hmm.W.T


class IdealTuner(Tuner):
    """Head or prompt tuning on the ideal model ``hmm`` (a :class:`~hmmlib.HMM`), in its dtype and on its
    device, with a :class:`HeadConfig` or a :class:`FakeTokenPromptConfig`. Datasets must come from the same
    HMM (:func:`hmmlib.adapt.make_splits`). The HMM is not registered: ``state_dict()`` holds the head and
    the fake tokens' parameters ``theta``."""

    def __init__(self, hmm: HMM, cfg: HeadConfig | FakeTokenPromptConfig):
        if isinstance(cfg, (PromptTuningConfig, PrefixTuningConfig, FineTuningConfig)):
            raise ValueError(f"the ideal model has no embeddings, layers or weights: {type(cfg).__name__} is for a "
                             "Transformer; use HeadConfig or FakeTokenPromptConfig (fake tokens) with an HMM.")
        super().__init__(cfg, (HeadConfig, FakeTokenPromptConfig))
        if not isinstance(hmm, HMM):
            raise ValueError(f"expected an HMM; got {type(hmm).__name__}.")
        self._frozen("hmm", hmm)
        self.device, self.dtype = hmm.device, hmm.dtype
        self.num_frozen_parameters = sum(t.numel() for t in (hmm.pi, hmm.A, hmm.W))
        self.init_token_ids: torch.Tensor | None = None
        self.theta: nn.Parameter | None = None
        self._ratio = _prior_ratio(hmm, cfg.prompt_len) if isinstance(cfg, FakeTokenPromptConfig) else None
        self._init_trainable(run_seed(cfg))

    def _init_trainable(self, seed: int) -> None:
        """The head (``nn.Linear``'s init) and, for a prompt, ``theta``, drawn with ``seed``."""
        cfg, hmm = self.cfg, self.hmm
        V, K = hmm.num_symbols, hmm.num_states
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = self._new_head(V, self.device, self.dtype)
            if isinstance(cfg, FakeTokenPromptConfig):
                if cfg.init == "tokens":
                    if cfg.init_tokens is not None:
                        ids = torch.tensor(cfg.init_tokens, dtype=torch.long)
                        if int(ids.max()) >= V:
                            raise ValueError(f"init_tokens must be symbols in [0, {V}); got {list(cfg.init_tokens)}.")
                    else:
                        g = torch.Generator().manual_seed(seed)
                        ids = torch.randint(V, (cfg.prompt_len,), generator=g)
                    self.init_token_ids = ids.to(self.device)
                    theta = _inverse_positivity(hmm.W[self.init_token_ids], cfg.positivity)  # a real symbol's row
                else:
                    theta = torch.randn(cfg.prompt_len, K, dtype=self.dtype).to(self.device)
                self.theta = nn.Parameter(theta.detach().clone())

    @property
    def prompt_rows(self) -> torch.Tensor | None:
        """The fake tokens' emission rows ``u`` ``(k, K)`` (detached), or ``None`` for head tuning."""
        return None if self.theta is None else fake_token_rows(self.theta.detach(), self.cfg.positivity)

    def set_closed_form_head(self, mu) -> None:
        r"""Head tuning in closed form: class-1 logit :math:`b^\top G` with :math:`b = (W^+)^\top\mu`, class 0
        logit 0, so the prediction is :math:`\mathbb 1[b^\top G(x) > 0]` (exact when :math:`W` has full column rank)."""
        if not isinstance(self.cfg, HeadConfig):
            raise ValueError("set_closed_form_head needs a HeadConfig.")
        b = theory.closed_form_head(self.hmm.W, torch.as_tensor(mu, dtype=self.dtype, device=self.device))
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[1] = b
            self.head.bias.zero_()

    def _prepare(self, dataset) -> dict[str, torch.Tensor]:
        K, V = self.hmm.num_states, self.hmm.num_symbols
        p, G = getattr(dataset, "posterior", None), getattr(dataset, "G", None)
        if not isinstance(p, torch.Tensor) or p.dim() != 2 or p.shape[1] != K or G is None or G.shape != (p.shape[0], V):
            raise ValueError(f"expected a TaskDataset of this HMM (posterior (N, {K}), G (N, {V})).")
        kw = {"device": self.device, "dtype": self.dtype}
        return {"p": p.to(**kw), "G": G.to(**kw), "y": dataset.y.to(self.device)}

    def features(self, dataset) -> torch.Tensor:
        """What the head sees: ``G(x)`` (head) or ``G_u(x)`` (prompt), ``(N, V)``, without gradients."""
        data = self._prepare(dataset)
        with torch.no_grad():
            return self._features(data, slice(None))

    def _features(self, data, idx) -> torch.Tensor:
        if self.theta is None:
            return data["G"][idx]
        return ideal_prompted_features(self.hmm, self.theta, data["p"][idx], positivity=self.cfg.positivity,
                                       prior_ratio=self._ratio)

    def _logits(self, data, idx):
        return self.head(self._features(data, idx))
