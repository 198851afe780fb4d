# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Strain energies as UFL: the invariants of a deformation, candidate terms, the default library, the law itself.

A law is a linear combination :math:`W = \sum_k \theta_k Q_k(\tilde I_1, \tilde I_2, J)` of library terms
(:class:`EnergyTerm`) in the isochoric invariants of the right Cauchy-Green tensor (:class:`Invariants`,
:func:`deformation_invariants`); :func:`default_library` gives EUCLID's generalized Mooney-Rivlin, Gent-Thomas and
volumetric terms. :class:`StrainEnergy` prints as an equation and gives the UFL energy and its first
Piola-Kirchhoff stress :math:`P = \partial W / \partial F` by :func:`ufl.diff`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem

__all__ = ["EnergyTerm", "Invariants", "StrainEnergy", "default_library", "deformation_invariants"]

SUPERSCRIPTS = {1: "", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶"}


@dataclass(frozen=True)
class Invariants:
    r"""Isochoric invariants and volume ratio of a deformation gradient, as UFL expressions.

    Attributes:
        I1: :math:`\tilde I_1 = J^{-2/3}\,\mathrm{tr}\,C`.
        I2: :math:`\tilde I_2 = J^{-4/3}\,\tfrac12\bigl((\mathrm{tr}\,C)^2 - \mathrm{tr}(C^2)\bigr)`.
        J: :math:`J = \det F`.
    """

    I1: Any
    I2: Any
    J: Any


def deformation_invariants(F: Any) -> Invariants:
    r"""The invariants of ``F`` (UFL, ``(d, d)``); a 2-D ``F`` is a plane-strain section (:math:`F_{33} = 1`).

    With :math:`C = \mathrm{diag}(C_{2\times2}, 1)` the 3-D invariants are :math:`I_1 = \mathrm{tr}\,C_{2\times2} + 1`
    and :math:`I_2 = \det C_{2\times2} + \mathrm{tr}\,C_{2\times2}`.
    """
    d = F.ufl_shape[0]
    C = F.T * F
    J = ufl.det(F)
    if d == 2:
        I1 = ufl.tr(C) + 1.0
        I2 = ufl.det(C) + ufl.tr(C)
    elif d == 3:
        I1 = ufl.tr(C)
        I2 = 0.5 * (ufl.tr(C) ** 2 - ufl.tr(C * C))
    else:
        raise ValueError(f"Deformation gradients of dimension 2 or 3 only, got {d}.")
    return Invariants(I1=I1 * J ** (-2.0 / 3.0), I2=I2 * J ** (-4.0 / 3.0), J=J)


@dataclass(frozen=True)
class EnergyTerm:
    """One candidate term :math:`Q_k` of the strain energy.

    Attributes:
        name: How the term prints in an equation, e.g. ``"(Ĩ1-3)²"``.
        energy: ``energy(invariants) -> UFL expression`` of the term (:class:`Invariants` in).
        nonnegative: Whether physical admissibility asks for a non-negative coefficient (true for every term of
            :func:`default_library`: each is non-negative and vanishes at :math:`F = I`, so non-negative
            coefficients give a non-negative energy that vanishes in the reference state).
        key: A short identifier (ASCII) for files and summaries.
    """

    name: str
    energy: Callable[[Invariants], Any]
    nonnegative: bool = True
    key: str = ""


def _power(base: str, k: int) -> str:
    return f"{base}{SUPERSCRIPTS.get(k, f'^{k}')}"


def default_library(max_degree: int = 3, *, log_i2: bool = True, volumetric: Sequence[int] = (2,)) -> list[EnergyTerm]:
    r"""The EUCLID-style library: generalized Mooney-Rivlin, Gent-Thomas and volumetric terms.

    Terms, in this order: :math:`(\tilde I_1-3)^i (\tilde I_2-3)^j` for :math:`1 \le i+j \le` ``max_degree``
    (by degree, then by falling :math:`i`), :math:`\log(\tilde I_2/3)` if ``log_i2``, and :math:`(J-1)^m` for each
    ``m`` in ``volumetric`` (even powers). With the defaults that is 9 + 1 + 1 = 11 terms.

    Args:
        max_degree: Highest total degree of the Mooney-Rivlin terms.
        log_i2: Include the Gent-Thomas term :math:`\log(\tilde I_2/3)`.
        volumetric: Even powers ``m`` of the volumetric terms :math:`(J-1)^m`.
    """
    if max_degree < 1:
        raise ValueError(f"max_degree must be at least 1, got {max_degree}.")
    if any(m < 2 or m % 2 for m in volumetric):
        raise ValueError(f"volumetric powers must be even and >= 2, got {list(volumetric)}.")
    terms: list[EnergyTerm] = []
    for degree in range(1, max_degree + 1):
        for i in range(degree, -1, -1):
            j = degree - i

            def energy(inv: Invariants, i: int = i, j: int = j) -> Any:
                return (inv.I1 - 3.0) ** i * (inv.I2 - 3.0) ** j

            name = "".join(_power(f"(Ĩ{n}-3)", p) for n, p in ((1, i), (2, j)) if p > 0)  # e.g. (Ĩ1-3)²(Ĩ2-3)
            terms.append(EnergyTerm(name=name, energy=energy, key=f"K1^{i}K2^{j}"))
    if log_i2:
        terms.append(EnergyTerm(name="log(Ĩ2/3)", energy=lambda inv: ufl.ln(inv.I2 / 3.0), key="logI2"))
    for m in volumetric:

        def volume(inv: Invariants, m: int = m) -> Any:
            return (inv.J - 1.0) ** m

        terms.append(EnergyTerm(name=_power("(J-1)", m), energy=volume, key=f"J^{m}"))
    return terms


class StrainEnergy:
    r"""A strain energy :math:`W = \sum_k \theta_k Q_k` over a library of :class:`EnergyTerm`.

    Args:
        library: The terms.
        coefficients: One coefficient per term (zeros for inactive terms).

    Attributes:
        library: The terms.
        coefficients: The coefficients, a read-only copy.
    """

    def __init__(self, library: Sequence[EnergyTerm], coefficients: npt.ArrayLike):
        theta = np.array(coefficients, dtype=np.float64).reshape(-1)
        if theta.shape != (len(library),):
            raise ValueError(f"{theta.size} coefficients given for {len(library)} library terms.")
        if not np.all(np.isfinite(theta)):
            raise ValueError("The coefficients must be finite.")
        self.library = list(library)
        theta.setflags(write=False)
        self.coefficients = theta

    @property
    def support(self) -> npt.NDArray[np.intp]:
        """Indices of the active (non-zero) terms."""
        return np.flatnonzero(self.coefficients)

    def __str__(self) -> str:
        """The equation, e.g. ``W = 0.500 (Ĩ1-3) + 1.500 (J-1)²``."""
        parts = [f"{abs(c):.3f} {self.library[k].name}" for k, c in enumerate(self.coefficients) if c != 0.0]
        if not parts:
            return "W = 0"
        signs = [" - " if c < 0 else " + " for c in self.coefficients if c != 0.0]
        text = ("-" if signs[0] == " - " else "") + parts[0]
        for sign, part in zip(signs[1:], parts[1:], strict=True):
            text += sign + part
        return f"W = {text}"

    def __repr__(self) -> str:
        return f"StrainEnergy({self})"

    def energy(self, F: Any, coefficients: Sequence[Any] | None = None) -> Any:
        """UFL strain energy of the deformation gradient ``F`` (only the active terms).

        Args:
            F: Deformation gradient, a UFL ``(d, d)`` expression (a :func:`ufl.variable` to differentiate).
            coefficients: UFL coefficients of the active terms, in support order (e.g. ``fem.Constant``: the
                compiled form then does not depend on the values); default the numbers themselves.
        """
        inv = deformation_invariants(F)
        support = self.support
        values = [float(self.coefficients[k]) for k in support] if coefficients is None else list(coefficients)
        if len(values) != len(support):
            raise ValueError(f"{len(values)} UFL coefficients given for {len(support)} active terms.")
        W: Any = 0.0
        for c, k in zip(values, support, strict=True):
            W = W + c * self.library[k].energy(inv)
        return W

    def stress(self, u: fem.Function) -> Any:
        r"""First Piola-Kirchhoff stress :math:`P = \partial W / \partial F` at ``u`` (UFL, one Constant per term)."""
        F = ufl.variable(ufl.Identity(len(u)) + ufl.grad(u))
        domain = u.function_space.mesh
        constants = [fem.Constant(domain, float(self.coefficients[k])) for k in self.support]
        return ufl.diff(self.energy(F, constants), F)
