"""What a trained DreamerV3 gets wrong, measured on fresh rollouts of its own policy on any batched core.

``diagnose(agent, core, steps)`` plays the agent's (sampled) policy for ``steps`` env steps per row, recomputes the
posterior of every next observation (the pre-reset final one where an episode ended), and compares what the world
model and the critic predict with what happened:

* ``reward``: the reward head on the posterior after step t against the reward of step t (one step, observed);
* ``imagined``: the sum of the rewards the model predicts over ``horizon`` steps imagined from the posterior at t
  with the actions the policy really took (open loop, the prior only: what the actor trains on) against the real
  sum, over windows that do not cross an episode end;
* ``cont``: the continue head against its target ((1 - terminal) x discount);
* ``value``: the critic at the posterior against the discounted return that followed (to the episode's end);
* ``decoder``: R^2 of each observation dimension's reconstruction (in symlog space, as it is trained);
* ``rewards``: the spread of the real rewards (percentiles, and the share of the return paid at episode ends),
  ``entropy``: the policy's entropy on the visited states, ``retnorm``: the return normaliser's range.

Errors are reported binned by ``bin_key`` (a per-row entry of the core's info at decision time, e.g. the jobs in
the system) and by the steps left to the episode's end, so a bias that only shows under load or near the end is
visible. Nothing here trains or changes the agent (its RNG draws aside).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from dreamalloc.core.spec import FINAL_OBS
from dreamalloc.nn.twohot import symlog, twohot_mean

TO_END_BINS = (0, 1, 2, 16, 128, 1024, 1 << 30)  # steps left to the episode's end: [0], [1], [2, 16), ...


def _quantile_edges(x: np.ndarray, n: int) -> np.ndarray:
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n + 1)))
    return edges if edges.size > 1 else np.array([x.min(), x.max() + 1.0])


def _binned(key: np.ndarray, pred: np.ndarray, real: np.ndarray, edges) -> list[dict]:
    """Per bin of ``key``: count, mean real, mean predicted, bias (pred - real) and RMSE."""
    out = []
    edges = np.asarray(edges, dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, key, side="right") - 1, 0, len(edges) - 2)
    for b in range(len(edges) - 1):
        sel = idx == b
        if not sel.any():
            continue
        p, r = pred[sel], real[sel]
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(sel.sum()), "real": float(r.mean()),
                    "pred": float(p.mean()), "bias": float((p - r).mean()),
                    "rmse": float(np.sqrt(((p - r) ** 2).mean()))})
    return out


def _summary(pred: np.ndarray, real: np.ndarray) -> dict:
    err = pred - real
    var = float(real.var())
    constant = var <= 1e-12 * max(1.0, float(real.mean()) ** 2)  # R^2 is undefined for a constant target
    return {"n": int(real.size), "real": float(real.mean()), "pred": float(pred.mean()), "bias": float(err.mean()),
            "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": float("nan") if constant else float(1.0 - (err ** 2).mean() / var)}


@torch.no_grad()
def rollout(agent, core, steps: int, seed: int, bin_key: str | None = None) -> dict:
    """Per-step records [T, B] of the agent's own policy: rewards, ends, bin values, posterior features before
    and after each step, the actions (one-hot) and the policy's entropy."""
    wm, dev = agent.wm, agent.device
    obs, info = core.reset(seed=seed)
    state = agent.initial_state(core.B)
    rec: dict[str, list] = {k: [] for k in ("reward", "term", "end", "bin", "feat", "next_feat", "next_obs", "onehot",
                                            "entropy")}
    for _ in range(steps):
        action, state = agent.act(obs, state, info)
        feat = wm.rssm.feat(state["deter"], state["stoch"])
        logp = agent.ac.logp(agent.ac.inputs(feat, state.get("ac_h")), info.get("action_mask") if info else None)
        b = info.get(bin_key) if (bin_key and info) else None
        next_obs, reward, term, trunc, info2 = core.step(action)
        last_obs = next_obs  # the observation the step led to: the pre-reset final one where an episode ended
        if FINAL_OBS in info2:
            ended = info2.get("_" + FINAL_OBS)
            last_obs = info2[FINAL_OBS] if ended is None else torch.where(
                torch.as_tensor(ended).to(dev).view(-1, 1), info2[FINAL_OBS].to(dev), next_obs.to(dev))
        token = wm.encode(last_obs.to(dev).float())
        nd, ns, _ = wm.rssm.obs_step(state["deter"], state["stoch"], state["action"], token,
                                     torch.zeros(core.B, dtype=torch.bool, device=dev))
        rec["reward"].append(reward.float().cpu())
        rec["term"].append(torch.as_tensor(term).bool().cpu())
        rec["end"].append((torch.as_tensor(term) | torch.as_tensor(trunc)).bool().cpu())
        rec["bin"].append(torch.as_tensor(b).float().reshape(core.B).cpu() if b is not None
                          else torch.zeros(core.B))
        rec["feat"].append(feat.cpu())
        rec["next_feat"].append(wm.rssm.feat(nd, ns).cpu())
        rec["next_obs"].append(last_obs.float().cpu())
        rec["onehot"].append(state["action"].cpu())
        rec["entropy"].append(-(logp.exp() * logp).sum(-1).cpu())
        obs, info = next_obs, info2
    return {k: torch.stack(v) for k, v in rec.items() if v}


@torch.no_grad()
def diagnose(agent, core, steps: int, seed: int = 12_345, bin_key: str | None = None, horizon: int = 15,
             bins: int = 6, chunk: int = 4096) -> dict:
    """The measurements of the module docstring as a JSON-able dict."""
    wm, ac, dev = agent.wm, agent.ac, agent.device
    r = rollout(agent, core, steps, seed, bin_key)
    T, B = r["reward"].shape
    reward, term, end = r["reward"].numpy(), r["term"].numpy(), r["end"].numpy()
    disc = wm.discount
    # steps left to the episode's end and the discounted return that followed (NaN where the rollout cut it)
    to_end = np.full((T, B), np.nan)
    ret = np.full((T, B), np.nan)
    for b in range(B):
        left, g = np.nan, np.nan
        for t in reversed(range(T)):
            if end[t, b]:
                left, g = 0.0, 0.0
            elif not np.isnan(left):
                left += 1
            if not np.isnan(g):  # g is 0 at an episode's last step: nothing follows it
                g = reward[t, b] + disc * g
            to_end[t, b], ret[t, b] = left, g

    def heads(feats: torch.Tensor, fn) -> np.ndarray:
        flat = feats.reshape(-1, feats.shape[-1])
        return torch.cat([fn(flat[i:i + chunk].to(dev)).float().cpu() for i in range(0, len(flat), chunk)]
                         ).reshape(feats.shape[:-1]).numpy()

    pred_rew = heads(r["next_feat"], wm.reward_mean)
    pred_con = heads(r["next_feat"], wm.cont_prob)
    con_target = (~term).astype(np.float64) * disc
    value = heads(r["feat"], lambda f: twohot_mean(ac.critic(f), ac.bins)) if ac.gru is None else None
    # open-loop imagination with the real actions, from the posterior before each step
    H = horizon
    imag = np.full((T, B), np.nan)
    real_h = np.full((T, B), np.nan)
    if T > H:
        starts = T - H
        feats = r["feat"][:starts].reshape(starts * B, -1)
        dsz = agent.cfg.deter
        deter, stoch = feats[:, :dsz], feats[:, dsz:].reshape(-1, agent.cfg.stoch, agent.cfg.classes)
        onehot = r["onehot"]  # [T, B, A]: the action taken at t
        acc = torch.zeros(starts * B)
        for i in range(0, starts * B, chunk):
            d, s = deter[i:i + chunk].to(dev), stoch[i:i + chunk].to(dev)
            rows = torch.arange(i, min(i + chunk, starts * B))
            t0, b0 = rows // B, rows % B
            tot = torch.zeros(len(rows), device=dev)
            for h in range(H):
                d, s = wm.rssm.img_step(d, s, onehot[t0 + h, b0].to(dev))
                tot += wm.reward_mean(wm.rssm.feat(d, s)).float()
            acc[i:i + len(rows)] = tot.cpu()
        imag[:starts] = acc.reshape(starts, B).numpy()
        csum = np.concatenate([np.zeros((1, B)), np.cumsum(reward, 0)])
        ends_c = np.concatenate([np.zeros((1, B)), np.cumsum(end, 0)])
        real_h[:starts] = csum[H:H + starts] - csum[:starts]
        crosses = (ends_c[H - 1:H - 1 + starts] - ends_c[:starts]) > 0  # an end before the window's last step
        imag[:starts][crosses] = np.nan
    key = r["bin"].numpy()
    left = np.nan_to_num(to_end, nan=1 << 29).ravel()  # episodes the rollout cut: the last bin
    ok_i = ~np.isnan(imag)
    edges = _quantile_edges(key.ravel(), bins)
    out: dict = {"steps": T, "rows": B, "horizon": H, "bin_key": bin_key, "discount": disc}
    out["reward"] = {"all": _summary(pred_rew.ravel(), reward.ravel()),
                     "by_bin": _binned(key.ravel(), pred_rew.ravel(), reward.ravel(), edges),
                     "by_to_end": _binned(left, pred_rew.ravel(), reward.ravel(), TO_END_BINS)}
    out["imagined"] = {"all": _summary(imag[ok_i], real_h[ok_i]),
                       "by_bin": _binned(key[ok_i], imag[ok_i], real_h[ok_i], edges)}
    out["cont"] = {"all": _summary(pred_con.ravel(), con_target.ravel()),
                   "by_to_end": _binned(left, pred_con.ravel(), con_target.ravel(), TO_END_BINS)}
    if value is not None:
        ok_v = ~np.isnan(ret)
        out["value"] = {"all": _summary(value[ok_v], ret[ok_v]),
                        "by_bin": _binned(key[ok_v], value[ok_v], ret[ok_v], edges),
                        "by_to_end": _binned(to_end[ok_v], value[ok_v], ret[ok_v], TO_END_BINS)}
    # decoder: R^2 per observation dimension in symlog space
    nobs = r["next_obs"].reshape(T * B, -1)
    nfeat = r["next_feat"].reshape(T * B, -1)
    dec = torch.cat([wm.decoder(nfeat[i:i + chunk].to(dev)).float().cpu() for i in range(0, len(nfeat), chunk)])
    target = symlog(nobs)
    var = target.var(0)
    mse = (dec - target).square().mean(0)
    out["decoder_r2"] = [float(1 - m / v) if v > 1e-12 else None for m, v in zip(mse, var, strict=True)]
    # the rewards themselves
    flat = reward.ravel()
    ep_ret = reward.sum() / max(1, int(end.sum()))
    out["rewards"] = {"percentiles": {str(q): float(np.percentile(flat, q)) for q in (0.1, 1, 5, 50, 95, 99, 99.9)},
                      "mean": float(flat.mean()), "min": float(flat.min()), "max": float(flat.max()),
                      "symlog_range": [float(np.sign(flat.min()) * np.log1p(abs(flat.min()))),
                                       float(np.sign(flat.max()) * np.log1p(abs(flat.max())))],
                      "end_share": float(reward[end].sum() / reward.sum()) if reward.sum() != 0 else None,
                      "end_mean": float(reward[end].mean()) if end.any() else None,
                      "episodes": int(end.sum()), "return_per_episode": float(ep_ret)}
    out["entropy"] = float(r["entropy"].mean())
    out["actions"] = (r["onehot"].reshape(T * B, -1).mean(0)).tolist()
    out["retnorm"] = {"lo": float(ac.retnorm.lo), "hi": float(ac.retnorm.hi), "scale": float(ac.retnorm.scale())}
    return out


def fmt_bins(rows: list[dict], label: str) -> str:
    return "\n".join(f"    {label} [{r['lo']:.6g}, {r['hi']:.6g}): n={r['n']:<6} real={r['real']:<10.4g} "
                     f"pred={r['pred']:<10.4g} bias={r['bias']:<10.4g} rmse={r['rmse']:.4g}" for r in rows)


def report(step: int, d: dict) -> str:
    lines = [f"== step {step}: {d['rows']} envs x {d['steps']} steps, {d['rewards']['episodes']} episodes, "
             f"return/episode {d['rewards']['return_per_episode']:.4g}, entropy {d['entropy']:.3f}, retnorm "
             f"[{d['retnorm']['lo']:.4g}, {d['retnorm']['hi']:.4g}] (scale {d['retnorm']['scale']:.4g})"]
    for name in ("reward", "imagined", "cont", "value"):
        if name not in d:
            continue
        a = d[name]["all"]
        lines.append(f"  {name}: real {a['real']:.4g} pred {a['pred']:.4g} bias {a['bias']:.4g} rmse {a['rmse']:.4g} "
                     f"R2 {a['r2']:.3f}")
        if "by_bin" in d[name] and d["bin_key"]:
            lines.append(fmt_bins(d[name]["by_bin"], d["bin_key"]))
        if "by_to_end" in d[name]:
            lines.append(fmt_bins(d[name]["by_to_end"], "to_end"))
    rw = d["rewards"]
    lines.append(f"  rewards: percentiles {json.dumps({k: round(v, 5) for k, v in rw['percentiles'].items()})}, "
                 f"min {rw['min']:.4g}, end share {rw['end_share']}, end mean {rw['end_mean']}")
    lines.append("  decoder R2: " + " ".join("-" if v is None else f"{v:.2f}" for v in d["decoder_r2"]))
    lines.append("  actions: " + " ".join(f"{v:.2f}" for v in d["actions"]))
    return "\n".join(lines)


__all__ = ["diagnose", "report", "rollout"]
