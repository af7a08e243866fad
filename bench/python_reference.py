#!/usr/bin/env python3
"""The musat3 N-sweep the Python way: numpy + scipy.integrate.solve_ivp, for timing against ihdyn.

Run by hand (not in CI):
    pip install numpy scipy
    python3 bench/python_reference.py            # times the sweep, prints T per N
    python3 bench/python_reference.py --check output/musat3-sweep/sweep.csv
                                                  # and compares with ihdyn's sweep.csv

Same problem as scenarios/musat3-sweep.toml: the three-parameter flow of docs/theory/musat.md §7.1
(query last, loss scale 1), 24 geometric N from 4 to 4096, thresholds 0.5 and 0.1, the loss-half
time and the time of the peak of d alpha/dt. Same integrator family (RK45 = Dormand-Prince 5(4)
with dense output), same tolerances (rtol 1e-10, atol 1e-12), events located by solve_ivp's root
finding on its dense output. Each N runs until the loss is below 10% of its initial value (just
after the peak, as ihdyn stops once every event has been found). One process, one thread, as a
straightforward implementation would be written.
"""
import argparse
import csv
import math
import time

import numpy as np
from scipy.integrate import solve_ivp


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def loss_grad(theta, n):
    """Loss and gradient of docs/theory/musat.md §7.1 (q = N)."""
    alpha, beta, gamma = theta
    k = 2 * n - 1
    log_c = math.log(2 * n - 2)
    a, abar = sigmoid(alpha - log_c), sigmoid(log_c - alpha)
    b = sigmoid(beta * a - math.log(k))
    bbar = sigmoid(math.log(k) - beta * a)
    loss = (gamma * b - 1) ** 2 + gamma**2 * bbar**2 / k
    dl_dg = 2 * b * (gamma * b - 1) + 2 * gamma * bbar**2 / k
    dl_db = 2 * gamma * (gamma * b - 1) - 2 * gamma**2 * bbar / k
    dl_dbeta = dl_db * b * bbar * a
    dl_dalpha = dl_db * b * bbar * beta * a * abar
    return loss, np.array([dl_dalpha, dl_dbeta, dl_dg])


def solve_one(n, thresholds):
    rhs = lambda t, th: -loss_grad(th, n)[1]
    l0 = loss_grad(np.zeros(3), n)[0]
    events = []
    names = []
    for th in thresholds:
        for idx, name in [(2, "T_gamma3"), (1, "T_beta2"), (0, "T_alpha3")]:
            f = (lambda idx, th: lambda t, y: y[idx] - th)(idx, th)
            f.direction = 1
            events.append(f)
            names.append((name, th))
    f = lambda t, y: loss_grad(y, n)[0] - 0.5 * l0
    f.direction = -1
    events.append(f)
    names.append(("T_loss_half", None))

    def rate_slope(t, y):
        # d(d alpha/dt)/dt along the flow, by a central difference of the gradient.
        v = rhs(t, y)
        eps = 1e-6 * max(1.0, np.max(np.abs(y))) / max(np.max(np.abs(v)), 1e-300)
        return (rhs(t, y + eps * v)[0] - rhs(t, y - eps * v)[0]) / (2 * eps)

    rate_slope.direction = -1
    events.append(rate_slope)
    names.append(("t_peak_alpha_rate", None))
    stop = lambda t, y: loss_grad(y, n)[0] - 0.1 * l0
    stop.terminal = True
    stop.direction = -1
    events.append(stop)
    sol = solve_ivp(rhs, (0.0, 10.0 * n * n), np.zeros(3), method="RK45", rtol=1e-10, atol=1e-12,
                    events=events, dense_output=False)
    out = {}
    for (name, th), times, states in zip(names, sol.t_events, sol.y_events):
        if not len(times):
            out[(name, th)] = None
        elif name == "t_peak_alpha_rate":
            # the largest local maximum of d alpha/dt
            rates = [-loss_grad(y, n)[1][0] for y in states]
            out[(name, th)] = times[int(np.argmax(rates))]
        else:
            out[(name, th)] = times[0]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", help="ihdyn's sweep.csv to compare the event times with")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ns = sorted({int(round(math.exp(math.log(4) + i / 23 * (math.log(4096) - math.log(4))))) for i in range(24)})
    thresholds = [0.1, 0.5]
    best = math.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        results = {n: solve_one(n, thresholds) for n in ns}
        best = min(best, time.perf_counter() - t0)
    print(f"scipy solve_ivp sweep: {len(ns)} N x {len(thresholds)} thresholds, best of {args.repeat}: {best:.3f} s")
    if args.check:
        worst = 0.0
        with open(args.check) as f:
            for row in csv.DictReader(f):
                n, th = int(row["N"]), float(row["threshold"])
                for col in ["T_gamma3", "T_beta2", "T_alpha3", "T_loss_half", "t_peak_alpha_rate"]:
                    key = (col, th) if col.startswith("T_") and col != "T_loss_half" else (col, None)
                    ours, theirs = float(row[col]), results[n][key]
                    worst = max(worst, abs(ours - theirs) / ours)
        print(f"largest relative difference of the event times against ihdyn: {worst:.2e}")


if __name__ == "__main__":
    main()
