# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Candidate terms of a PDE as named UFL integrands: generated ones and the user's own.

A term :math:`\theta(u)` of the right-hand side of :math:`\partial_t u_c = \sum_i \xi_{ci} \theta_i(u)` enters
the regression through its weak form against a scalar test function :math:`v`. Each :class:`Term` holds two
integrands (callables ``(u, v) -> UFL expression``, integrated over ``dx``):

- ``weak``: with as many derivatives as possible moved onto ``v``. Exact for test functions that vanish on the
  boundary (the compactly supported bumps of the regression), so noisy data is differentiated as little as
  possible, e.g. :math:`u^p \partial_x u \to -\frac{u^{p+1}}{p+1} \partial_x v`.
- ``model``: the term as the discovered model uses it when it is time-stepped, with second derivatives
  integrated by parts once (natural boundary conditions), e.g. :math:`u^p \partial_x u \to u^p \partial_x u\, v`.

:func:`polynomial_library` generates the standard candidates: monomials of the field components up to a degree,
and monomials up to another degree times the derivatives :math:`\partial_x u_k, \partial_y u_k, \Delta u_k`
(or the single second derivatives ``"xx"``, ``"xy"``, ``"yy"``, ...).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ufl

__all__ = ["Library", "Term", "polynomial_library"]

Integrand = Callable[[ufl.core.expr.Expr, ufl.core.expr.Expr], ufl.core.expr.Expr]

_AXES = "xyz"


@dataclass(frozen=True)
class Term:
    r"""A named candidate term.

    Attributes:
        name: How the term prints in an equation, e.g. ``"u^3"`` or ``"u Δu"``.
        weak: ``weak(u, v)``: the integrand of :math:`\\int \\theta(u) v\\,dx` for test functions ``v`` that vanish
            on the boundary, derivatives moved onto ``v`` where possible. ``u`` is the field (scalar, or a vector
            whose components are ``u[k]``), ``v`` a scalar test function.
        model: ``model(u, v)``: the integrand used to time-step the discovered model (default: ``weak``).
    """

    name: str
    weak: Integrand
    model: Integrand | None = None

    def model_integrand(self, u: ufl.core.expr.Expr, v: ufl.core.expr.Expr) -> ufl.core.expr.Expr:
        """The integrand of the term in a model that is time-stepped (``model``, else ``weak``)."""
        return (self.model or self.weak)(u, v)


class Library:
    """An ordered set of candidate terms with unique names, for a field with named components.

    Args:
        terms: The candidate terms.
        components: Names of the field's components (``("u",)`` for a scalar field, ``("u", "v")`` for a 2-D
            vector field); the equations print as ``u_t = ...``.

    Raises:
        ValueError: for an empty library, duplicate term names or no component names.
    """

    def __init__(self, terms: Sequence[Term], *, components: Sequence[str] = ("u",)):
        self.terms: tuple[Term, ...] = tuple(terms)
        self.components: tuple[str, ...] = tuple(components)
        if not self.terms:
            raise ValueError("A library needs at least one term.")
        if not all(isinstance(t, Term) for t in self.terms):
            raise TypeError("Library terms must be fem_ml.discovery.Term objects.")
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"Term names must be unique, got {names}.")
        if not self.components or len(set(self.components)) != len(self.components):
            raise ValueError(f"Component names must be unique and non-empty, got {self.components}.")

    def __len__(self) -> int:
        return len(self.terms)

    @property
    def names(self) -> list[str]:
        """The term names, in order."""
        return [t.name for t in self.terms]

    def index(self, name: str) -> int:
        """Position of the term called ``name``.

        Raises:
            KeyError: if there is no such term.
        """
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"No term {name!r} in the library; terms: {self.names}.") from None

    def __add__(self, other: Library | Sequence[Term]) -> Library:
        """The library with ``other``'s terms appended (same components)."""
        extra = other.terms if isinstance(other, Library) else tuple(other)
        return Library(self.terms + tuple(extra), components=self.components)


def _component(u: ufl.core.expr.Expr, k: int, n: int) -> ufl.core.expr.Expr:
    return u if n == 1 else u[k]


def _monomial(u: ufl.core.expr.Expr, powers: tuple[int, ...]) -> ufl.core.expr.Expr:
    n = len(powers)
    value: ufl.core.expr.Expr = ufl.as_ufl(1.0)
    for k, p in enumerate(powers):
        if p:
            value = value * _component(u, k, n) ** p
    return value


def _monomial_name(names: Sequence[str], powers: tuple[int, ...]) -> str:
    parts = [name if p == 1 else f"{name}^{p}" for name, p in zip(names, powers, strict=True) if p]
    return " ".join(parts) if parts else "1"


def _exponents(n: int, degree: int) -> list[tuple[int, ...]]:
    """Exponent tuples of the monomials in ``n`` variables of total degree 0..``degree``, graded order."""
    out: list[tuple[int, ...]] = []
    for total in range(degree + 1):
        for powers in itertools.product(range(total, -1, -1), repeat=n):
            if sum(powers) == total:
                out.append(powers)
    return out


def _monomial_term(names: Sequence[str], powers: tuple[int, ...]) -> Term:
    """The term ``u^a v^b ...``."""

    def integrand(u: ufl.core.expr.Expr, v: ufl.core.expr.Expr) -> ufl.core.expr.Expr:
        return _monomial(u, powers) * v

    return Term(_monomial_name(names, powers), integrand)


def _derivative_term(names: Sequence[str], powers: tuple[int, ...], k: int, op: str) -> Term:
    """The term ``monomial * D u_k`` for the derivative ``op`` ("x", "y", "z", "Δ", "xx", "xy", ...)."""
    n = len(names)
    prefix = _monomial_name(names, powers)
    prefix = "" if prefix == "1" else prefix + " "
    if op == "Δ":
        name = f"{prefix}Δ{names[k]}"

        def laplacian(u, v, powers=powers, k=k):
            uk = _component(u, k, n)
            return -ufl.inner(ufl.grad(uk), ufl.grad(_monomial(u, powers) * v))

        return Term(name, laplacian)
    axes = [_AXES.index(a) for a in op]
    name = f"{prefix}{names[k]}_{op}"
    if len(axes) == 1:
        (j,) = axes
        only_k = all(p == 0 for i, p in enumerate(powers) if i != k)

        def model(u, v, powers=powers, k=k, j=j):
            return _monomial(u, powers) * _component(u, k, n).dx(j) * v

        if only_k:  # u_k^p d_j u_k = d_j(u_k^(p+1)) / (p+1): the derivative moves onto v entirely
            p = powers[k]

            def moved(u, v, p=p, k=k, j=j):
                return -(_component(u, k, n) ** (p + 1)) / (p + 1) * v.dx(j)

            return Term(name, moved, model)
        return Term(name, model)
    i, j = axes

    def second(u, v, powers=powers, k=k, i=i, j=j):
        uk, mv = _component(u, k, n), _monomial(u, powers) * v
        return -0.5 * (uk.dx(i) * mv.dx(j) + uk.dx(j) * mv.dx(i))

    return Term(name, second)


def polynomial_library(
    components: Sequence[str] = ("u",),
    *,
    gdim: int = 2,
    degree: int = 3,
    derivatives: Sequence[str] = ("x", "y", "Δ"),
    derivative_degree: int = 2,
    extra: Sequence[Term] = (),
) -> Library:
    r"""The standard candidate library of a field with the given components.

    The terms, in order: the monomials of the components of total degree 0 to ``degree`` (``1, u, u^2, ...``),
    then for each derivative in ``derivatives`` and each component :math:`u_k`, the monomials of total degree 0 to
    ``derivative_degree`` times that derivative of :math:`u_k` (``u_x, u u_x, u^2 u_x, ...``), then ``extra``.

    Args:
        components: Names of the field's components.
        gdim: Geometric dimension (the axes ``x``, ``y``, ``z`` that derivatives may use).
        degree: Highest total degree of the plain monomials.
        derivatives: Spatial derivatives: ``"x"``, ``"y"``, ``"z"`` (first), ``"Δ"`` (Laplacian), or pairs of
            axes such as ``"xx"``, ``"xy"`` (second).
        derivative_degree: Highest total degree of the monomials multiplying a derivative (-1: no derivative
            terms).
        extra: The user's own terms, appended.

    Returns:
        The library.

    Raises:
        ValueError: for an unknown derivative or negative degree.
    """
    names = tuple(components)
    if degree < 0 or derivative_degree < -1:
        raise ValueError(f"degree must be >= 0 and derivative_degree >= -1, got {degree}, {derivative_degree}.")
    axes = _AXES[:gdim]
    for op in derivatives:
        if op != "Δ" and not (1 <= len(op) <= 2 and all(a in axes for a in op)):
            raise ValueError(f"Unknown derivative {op!r}: use 'Δ' or one or two of the axes {list(axes)}.")
    terms = [_monomial_term(names, powers) for powers in _exponents(len(names), degree)]
    for op in derivatives:
        for k in range(len(names)):
            terms += [_derivative_term(names, p, k, op) for p in _exponents(len(names), derivative_degree)]
    return Library([*terms, *extra], components=names)
