# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Full-order Newmark time stepping of structures in PETSc, to produce training data for reduced dynamics.

:class:`NewmarkIntegrator` integrates :math:`M \ddot u + C \dot u + K u = \sum_l b_l\, s_l(t)` with the
Newmark-:math:`\beta` scheme (one LU factorization for the whole run) and returns a :class:`NewmarkTrajectory`:
the displacements, velocities and accelerations it was asked to keep, and linear functionals of the displacement
(a tip displacement, say) at every step. With the default :math:`\beta = 1/4, \gamma = 1/2` (average
acceleration) it is the scheme :meth:`~fem_ml.dynamics.second_order.SecondOrderModel.simulate` uses for the reduced
model, so the reduced model and its training data are stepped alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from petsc4py import PETSc

import numpy as np
import numpy.typing as npt

from fem_ml._mpi import check_collectively, collectively
from fem_ml.dynamics.data import Inputs
from fem_ml.snapshots import check_converged

__all__ = ["NewmarkIntegrator", "NewmarkTrajectory"]

logger = logging.getLogger(__name__)

#: Sparsity relation of the matrices added in :class:`NewmarkIntegrator` (the safe, general one).
_DIFFERENT: PETSc.Mat.Structure = PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN  # type: ignore[assignment]


@dataclass(frozen=True)
class NewmarkTrajectory:
    """A full-order trajectory from :meth:`NewmarkIntegrator.run`.

    Attributes:
        times: The time of each step ``(n,)``.
        inputs: The input values ``(n, m)``.
        displacements: Owned dof values ``(n_owned, n)``, or None if not stored.
        velocities: Owned dof values of the velocity ``(n_owned, n)``, or None.
        accelerations: Owned dof values of the acceleration ``(n_owned, n)``, or None.
        functionals: ``{name: (n,)}``: each requested linear functional of the displacement at each step,
            replicated on every rank.
    """

    times: npt.NDArray[np.float64]
    inputs: npt.NDArray[np.float64]
    displacements: npt.NDArray[np.float64] | None = field(default=None, repr=False)
    velocities: npt.NDArray[np.float64] | None = field(default=None, repr=False)
    accelerations: npt.NDArray[np.float64] | None = field(default=None, repr=False)
    functionals: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict, repr=False)


class NewmarkIntegrator:
    r"""Newmark-:math:`\beta` time stepping of :math:`M \ddot u + C \dot u + K u = \sum_l b_l s_l(t)` in PETSc.

    The acceleration form: with predictors :math:`\tilde u = u_k + h \dot u_k + h^2 (\tfrac12 - \beta) \ddot u_k`
    and :math:`\tilde v = \dot u_k + h (1 - \gamma) \ddot u_k`, each step solves
    :math:`(M + \gamma h C + \beta h^2 K)\, \ddot u_{k+1} = f_{k+1} - C \tilde v - K \tilde u` with one LU
    factorization for the whole run (a constant step :math:`h`), then :math:`u_{k+1} = \tilde u + \beta h^2
    \ddot u_{k+1}`, :math:`\dot u_{k+1} = \tilde v + \gamma h \ddot u_{k+1}`. The default
    :math:`\beta = 1/4, \gamma = 1/2` is the average-acceleration scheme of
    :meth:`~fem_ml.dynamics.second_order.SecondOrderModel.simulate`.

    Dirichlet conditions: assemble :math:`M` and :math:`K` with the conditions (DOLFINx zeroes their rows and
    columns and puts 1 on the diagonal) and give loads that vanish on them; the constrained values then stay zero.

    Args:
        mass: :math:`M` (assembled PETSc Mat).
        stiffness: :math:`K`.
        loads: :math:`b_l`: one PETSc Vec or a sequence (one per input).
        damping: A PETSc Mat :math:`C`, or Rayleigh coefficients ``(alpha, beta)`` for :math:`C = \alpha M +
            \beta K`, or None (undamped).
        beta: Newmark :math:`\beta`.
        gamma: Newmark :math:`\gamma`.
        petsc_options: Options of the linear solvers (default: direct LU with MUMPS).
        options_prefix: PETSc options prefix of the solvers.

    The object owns two KSPs, a damping matrix (for Rayleigh damping) and work vectors; :meth:`destroy` frees
    them and is collective.
    """

    def __init__(
        self,
        mass: PETSc.Mat,
        stiffness: PETSc.Mat,
        loads: PETSc.Vec | Sequence[PETSc.Vec],
        *,
        damping: PETSc.Mat | tuple[float, float] | None = None,
        beta: float = 0.25,
        gamma: float = 0.5,
        petsc_options: Mapping[str, object] | None = None,
        options_prefix: str = "fem_ml_newmark_",
    ):
        comm = mass.getComm().tompi4py()
        self.loads = [loads] if isinstance(loads, PETSc.Vec) else list(loads)
        error = None
        if not (0 < beta <= 0.5 and 0.5 <= gamma <= 1.0):
            error = f"Need 0 < beta <= 1/2 and 1/2 <= gamma <= 1, got beta={beta}, gamma={gamma}."
        elif isinstance(damping, tuple) and (len(damping) != 2 or min(damping) < 0):
            error = f"Rayleigh damping needs two coefficients >= 0, got {damping}."
        elif mass.getSizes() != stiffness.getSizes():
            error = "mass and stiffness have different sizes."
        elif any(b.getSizes() != mass.getSizes()[0] for b in self.loads):
            error = "Each load vector needs the row layout of the matrices."
        check_collectively(comm, error)
        self.comm = comm
        self.M, self.K, self.beta, self.gamma = mass, stiffness, float(beta), float(gamma)
        self._owns_damping = isinstance(damping, tuple)
        if isinstance(damping, tuple):
            C = mass.copy()
            C.scale(float(damping[0]))
            C.axpy(float(damping[1]), stiffness, structure=_DIFFERENT)
            self.C: PETSc.Mat | None = C
        else:
            self.C = damping
        self.options = dict(petsc_options or {"ksp_type": "preonly", "pc_type": "lu",
                                               "pc_factor_mat_solver_type": "mumps"})  # fmt: skip
        self.prefix = options_prefix
        self._mass_solver = self._solver(mass, "mass_")
        self._step: tuple[float, PETSc.Mat, PETSc.KSP] | None = None
        self._work = [mass.createVecRight() for _ in range(6)]

    def _solver(self, A: PETSc.Mat, suffix: str) -> PETSc.KSP:
        ksp = PETSc.KSP().create(A.getComm())
        ksp.setOperators(A)
        prefix = self.prefix + suffix
        ksp.setOptionsPrefix(prefix)
        opts = PETSc.Options()
        for key, value in self.options.items():
            opts.setValue(prefix + key, str(value))
        try:
            ksp.setFromOptions()
            # The factorization reads its options (e.g. mat_mumps_icntl_*) when it is set up: before they are removed.
            ksp.setUp()
        finally:  # never left in PETSc's global database for the next solver with this prefix
            for key in self.options:
                opts.delValue(prefix + key)
        return ksp

    def _effective(self, h: float) -> PETSc.KSP:
        r"""The solver of :math:`M + \gamma h C + \beta h^2 K`, factorized once per step size (collective)."""
        if self._step is not None and self._step[0] == h:
            return self._step[2]
        if self._step is not None:
            self._step[2].destroy()
            self._step[1].destroy()
        S = self.M.copy()
        S.axpy(self.beta * h * h, self.K, structure=_DIFFERENT)
        if self.C is not None:
            S.axpy(self.gamma * h, self.C, structure=_DIFFERENT)
        ksp = self._solver(S, "step_")
        self._step = (h, S, ksp)
        return ksp

    def run(
        self,
        times: npt.ArrayLike,
        inputs: Inputs,
        *,
        initial: tuple[PETSc.Vec | None, PETSc.Vec | None] | None = None,
        store: Sequence[Literal["u", "v", "a"]] = ("u", "v", "a"),
        functionals: Mapping[str, PETSc.Vec] | None = None,
        progress_every: int = 0,
    ) -> NewmarkTrajectory:
        """Integrate over ``times`` (uniformly spaced) from rest or from ``initial`` (collective).

        Args:
            times: Uniform times ``(n,)``; the first is the initial time.
            inputs: Input values ``(n,)``/``(n, m)`` at ``times``, or a function ``s(t)``.
            initial: ``(u0, v0)`` PETSc Vecs (None entries for zero).
            store: Which owned fields to keep at every step: displacement, velocity, acceleration.
            functionals: ``{name: l}``: record :math:`l^T u_k` at every step (e.g. a tip displacement).
            progress_every: Log progress on rank 0 every so many steps (0: never).

        Returns:
            The trajectory.
        """
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        s = np.zeros((t.size, len(self.loads)))
        with collectively(self.comm):
            s = self._check_run(t, inputs, store)
        h = float(np.mean(np.diff(t)))
        u, v, a, rhs, tmp, pred = self._work
        for vec in (u, v, a):
            vec.zeroEntries()
        if initial is not None:
            for source, target in zip(initial, (u, v), strict=True):
                if source is not None:
                    source.copy(target)
        n_local = u.getLocalSize()
        kept = {key: np.empty((n_local, t.size)) for key in store}
        records = {name: np.empty(t.size) for name in (functionals or {})}

        def force(k: int, out: PETSc.Vec) -> None:
            out.zeroEntries()
            for b, value in zip(self.loads, s[k], strict=True):
                out.axpy(float(value), b)

        def keep(k: int) -> None:
            for key, vec in (("u", u), ("v", v), ("a", a)):
                if key in kept:
                    kept[key][:, k] = vec.getArray(readonly=True)
            for name, ell in (functionals or {}).items():
                records[name][k] = ell.dot(u)

        # Initial acceleration: M a0 = f0 - C v0 - K u0.
        force(0, rhs)
        self._subtract_forces(rhs, u, v, tmp)
        self._mass_solver.solve(rhs, a)
        check_converged(self._mass_solver, what="Newmark mass solve")
        keep(0)
        ksp = self._effective(h)
        for k in range(t.size - 1):
            # Predictors: u~ = u + h v + h^2 (1/2 - beta) a, v~ = v + h (1 - gamma) a.
            u.axpy(h, v)
            u.axpy(h * h * (0.5 - self.beta), a)
            v.axpy(h * (1.0 - self.gamma), a)
            force(k + 1, rhs)
            self._subtract_forces(rhs, u, v, tmp)
            ksp.solve(rhs, a)
            check_converged(ksp, what="Newmark step")
            u.axpy(self.beta * h * h, a)
            v.axpy(self.gamma * h, a)
            keep(k + 1)
            if progress_every and (k + 1) % progress_every == 0 and self.comm.rank == 0:
                logger.info("Newmark: step %d of %d", k + 1, t.size - 1)
        del pred
        return NewmarkTrajectory(t, s, kept.get("u"), kept.get("v"), kept.get("a"), records)

    def _check_run(self, t: npt.NDArray[np.float64], inputs: Inputs, store: Sequence[str]) -> npt.NDArray[np.float64]:
        """Validate the arguments of :meth:`run` (local); returns the input values ``(n, m)``."""
        m = len(self.loads)
        if t.size < 2 or not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
            raise ValueError("times must be finite, strictly increasing, at least two.")
        steps = np.diff(t)
        if np.max(np.abs(steps - steps.mean())) > 1e-9 * steps.mean():
            raise ValueError("NewmarkIntegrator.run needs uniformly spaced times.")
        raw = np.array([np.asarray(inputs(float(x))).reshape(-1) for x in t]) if callable(inputs) else inputs
        s = np.asarray(raw, dtype=np.float64)
        s = s[:, None] if s.ndim == 1 else s
        if s.shape != (t.size, m) or not np.isfinite(s).all():
            raise ValueError(f"inputs must be finite with shape ({t.size}, {m}), got {s.shape}.")
        if not set(store) <= {"u", "v", "a"}:
            raise ValueError(f"store takes 'u', 'v', 'a', got {list(store)}.")
        return s

    def _subtract_forces(self, rhs: PETSc.Vec, u: PETSc.Vec, v: PETSc.Vec, tmp: PETSc.Vec) -> None:
        """``rhs -= K u + C v``."""
        self.K.mult(u, tmp)
        rhs.axpy(-1.0, tmp)
        if self.C is not None:
            self.C.mult(v, tmp)
            rhs.axpy(-1.0, tmp)

    def destroy(self) -> None:
        """Free the solvers, work vectors and the Rayleigh damping matrix (collective)."""
        self._mass_solver.destroy()
        if self._step is not None:
            self._step[2].destroy()
            self._step[1].destroy()
            self._step = None
        for vec in self._work:
            vec.destroy()
        if self._owns_damping and self.C is not None:
            self.C.destroy()
            self.C = None
