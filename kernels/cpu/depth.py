"""Whole stretches of depth in one compiled call, for small widths.

At d of a few dozen, a per-layer Python loop spends most of its time in interpreter
and dispatch overhead, so here each thread takes one network (seed) and runs it through
a stretch of layers without returning: weights drawn from the Philox stream into a
per-thread buffer, BLAS sgemm called from compiled code, the fused normalisation +
activation pass of layer.py, and the rescaling with its float64 log-norm, and where the
run carries tangents their push through the layer's Jacobian (tangents.py). The caller
(the CPU backend) hands it a stretch of measured layers at a time and gets their
spectra back together.
"""

import numpy as np
from numba import njit, prange

from fastrank import codes
from fastrank.kernels.cpu import tangents as tangent
from fastrank.kernels.cpu.layer import rows_in_place, scale
from fastrank.kernels.cpu.philox import NORMAL_SCRATCH, normals_f32_at
from fastrank.kernels.cpu.spectrum import LANES, begin_spectrum, finish_spectra

#: The failure rule, compiled (fastrank.codes.failure).
failure = njit(cache=True, inline="always")(codes.failure)


@njit(cache=True)
def book(sumsq, layer, s, rescale, log_norm, failed_layer, reason):
    """Book network s's sum of squares at ``layer`` (Batch.account, compiled): False
    after marking it failed; else its log-norm accumulated (rescaled networks) or set."""
    why = failure(sumsq)
    if why != codes.OK:
        failed_layer[s] = layer
        reason[s] = why
        return False
    if rescale:
        log_norm[s] += 0.5 * np.log(sumsq)
    else:
        log_norm[s] = 0.5 * np.log(sumsq)
    return True


@njit(cache=True, parallel=True)
def advance(h, seeds, start, stops, stream, w_scale, gamma, norm, act, act_first, eps,
            rescale, log_norm, failed_layer, reason, sv, norms, tangents, tangent_log,
            qr_every, tangent_norms):
    """Advance every network of ``h`` (seeds x d x N, float32) from layer ``start``
    through the layers ``stops`` (ascending, >= start); one network per thread.

    Layer l's weights are the first d*d normals of (seed, stream, l), times ``w_scale``
    (float32, as fastrank.init.weights makes them). ``gamma`` > 0 finite makes the
    residual chain. ``log_norm`` accumulates (rescaled networks) or is set to log ||H||;
    a network whose H turns non-finite or zero is stopped with ``failed_layer`` and
    ``reason`` set and left alone afterwards. At each stop p a live network's log-norm
    goes to ``norms[p, seed]`` and, when ``sv`` is (stops, seeds, min(d, N)), its
    singular values to ``sv[p, seed]`` (its Gram spectrum), computed by the thread that
    ran it: a whole stretch of measured layers in one call, without returning to Python
    between them. Spectra are finished LANES at a time (spectrum.begin_spectrum at each
    stop, finish_spectra at every LANES-th and at the end), so that their QL sweeps run
    side by side.

    ``tangents`` (seeds x K x d x N, float32; K may be 0) are each network's tangents and
    ``tangent_log`` (seeds x K, float64) their log growth (fastrank.tangents.Tangents' t
    and log), both carried on in place: every layer a network runs pushes its tangents
    through the layer's Jacobian (tangents.py: K SGEMMs with the layer's weights, then
    the layer's own pre-activation, copied before the norm overwrites it) and
    renormalises them (QR every ``qr_every`` layers where K >= 2); at each stop a live
    network's log growth goes to ``tangent_norms[p, seed]``.
    """
    n_seeds, d, n = h.shape
    k_t = tangents.shape[1]
    for s in prange(n_seeds):
        if failed_layer[s] >= 0:
            continue
        w = np.empty((d, d), np.float32)
        spare = np.empty((d, n), np.float32)
        row_work = np.empty((3, d))
        scratch = np.empty(NORMAL_SCRATCH, np.uint32)  # the weights' normals
        hs = h[s]
        cur, z = hs, spare  # H and the next layer's buffer swap roles every layer
        in_h = True  # whether cur is h[s] itself
        flat_w = w.reshape(-1)
        reached = start
        work = np.empty((4, LANES, sv.shape[2]))  # spectra begun and not yet finished
        at, big = np.zeros(LANES, np.int64), np.zeros(LANES)  # their stops, their scales
        held = 0
        out = sv[:, s]
        # the tangents, and their products and pushed values (t and pushed swap roles every
        # layer), a spare row after each: tangents d N entries apart, a multiple of 4 KiB
        # at the usual sizes, would have their rows share the L1 cache's sets
        t = np.empty((k_t, d + 1, n), np.float32)
        pushed = np.empty_like(t)
        t[:, :d] = tangents[s]
        x = np.empty((d if k_t else 0, n), np.float32)  # the layer's pre-activation
        sq = np.empty((d, k_t))  # the pushed tangents' squared norms per feature
        for p in range(stops.size):
            for layer in range(reached + 1, stops[p] + 1):
                normals_f32_at(flat_w, seeds[s], stream, np.uint32(layer), 0, scratch)
                for k in range(flat_w.size):
                    flat_w[k] *= w_scale
                np.dot(w, cur, z)  # BLAS sgemm (numba calls it through SciPy)
                if np.isfinite(gamma):
                    for i in range(d):
                        for j in range(n):
                            z[i, j] = cur[i, j] + np.float32(gamma) * z[i, j]
                if k_t:
                    x[:, :] = z
                sumsq = rows_in_place(z, norm, act, act_first, eps, row_work)
                if not book(sumsq, layer, s, rescale, log_norm, failed_layer, reason):
                    break
                if k_t:
                    for m in range(k_t):
                        np.dot(w, t[m, :d], pushed[m, :d])  # BLAS sgemm
                    tangent.rows(x, t, pushed, sq, gamma, norm, act, act_first, eps)
                    tangent.renormalise(pushed, sq, tangent_log[s],
                                        k_t >= 2 and layer % qr_every == 0)
                    t, pushed = pushed, t
                if rescale:
                    scale(z, 1.0 / np.sqrt(sumsq))
                cur, z = z, cur
                in_h = not in_h
            if failed_layer[s] >= 0:
                break
            reached = stops[p]
            norms[p, s] = log_norm[s]
            tangent_norms[p, s, :] = tangent_log[s]
            if sv.shape[0]:
                at[held], big[held] = p, begin_spectrum(cur, work, held)
                held += 1
                if held == LANES:
                    finish_spectra(work, big, held, out, at)
                    held = 0
        if held:
            finish_spectra(work, big, held, out, at)
        if not in_h:  # one copy per call, not one per layer
            hs[:, :] = cur
        tangents[s] = t[:, :d]
