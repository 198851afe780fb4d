# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Unsupervised discovery of hyperelastic laws from displacements and reaction forces (EUCLID-style).

The data are full-field displacements :math:`u_s` at several load steps :math:`s` and the total reaction forces
:math:`R_{s,b}` on the loaded boundaries :math:`b`; no stresses. The strain energy is a linear combination of
library terms in the invariants of the isochoric right Cauchy-Green tensor,

.. math::

    W(F) = \sum_k \theta_k Q_k(\tilde I_1, \tilde I_2, J), \qquad \tilde I_1 = J^{-2/3} I_1,\;
    \tilde I_2 = J^{-4/3} I_2,\; J = \det F,

for example :math:`(\tilde I_1 - 3)^i (\tilde I_2 - 3)^j` with :math:`1 \le i + j \le 3`, :math:`\log(\tilde I_2/3)`
and :math:`(J - 1)^2` (:func:`~fem_ml.constitutive.energy.default_library`). In 2-D the mesh is a plane-strain
section: :math:`F` is embedded in 3-D with :math:`F_{33} = 1`. Each term's first Piola-Kirchhoff stress
:math:`P_k = \partial Q_k / \partial F` comes from :func:`ufl.diff`, and DOLFINx assembles, for each step and term,
the internal-force vector

.. math::

    f_{s,k}[a] = \int_\Omega P_k(u_s) : \nabla v_a \,\mathrm{d}x .

The internal forces are linear in :math:`\theta`. Weak-form equilibrium asks the rows of the free dofs (those
without Dirichlet conditions) to vanish, :math:`A_s \theta = 0`; force balance asks the sum of the rows of each
loaded boundary's dofs, in the load direction, to equal the measured reaction, :math:`B_s \theta = R_s`. EUCLID's
cost (Flaschel, Kumar and De Lorenzis, CMAME 381, 2021) weights the two with :math:`\lambda_r`:

.. math::

    \min_{\theta \ge 0}\; \sum_s \|A_s \theta\|^2 + \lambda_r \|B_s \theta - R_s\|^2 .

:func:`~fem_ml.constitutive.system.assemble_system` reduces each step's tall distributed block :math:`A_s` to a small
upper-triangular factor by a tall-skinny QR (a local QR on each rank, then a QR of the stacked small factors), so
the dense system is replicated on every rank and does not depend on the partition beyond rounding.
:func:`~fem_ml.constitutive.discovery.discover_law` then selects a sparse, non-negative model: for every model size
it finds the best support by non-negative least squares (all supports up to ``max_terms``, or a
sequential-thresholding path for large libraries), scores each size by leave-one-load-step-out cross-validation, and
keeps the smallest model whose cross-validated error is within a tolerance of the best. The result
(:class:`~fem_ml.constitutive.discovery.DiscoveredLaw`) prints as an equation and is a
:class:`~fem_ml.constitutive.energy.StrainEnergy` that
:func:`~fem_ml.constitutive.data.solve_displacement_controlled` solves with DOLFINx (SNES Newton), returning the
reaction forces.

The workflow::

    library = default_library()                               # 11 UFL terms
    path = solve_displacement_controlled(law, u, bcs, set_load, loads, [right_x, top_y])   # or measured data
    system = assemble_system(library, V, path.displacements, dirichlet_dofs=fixed,
                             reaction_dofs=[right_x, top_y], reaction_forces=path.reactions)
    law = discover_law(system)                                # W = 0.500 (Ĩ1-3) + 1.500 (J-1)²

Modules: :mod:`~fem_ml.constitutive.energy` (invariants, candidate terms, the strain energy),
:mod:`~fem_ml.constitutive.data` (loading experiments: solves, reaction forces, noise, the plate with a hole),
:mod:`~fem_ml.constitutive.system` (the assembled, reduced system),
:mod:`~fem_ml.constitutive.discovery` (model selection, the discovered law and its plot).
"""

from fem_ml.constitutive.data import (
    LoadPath,
    add_displacement_noise,
    plate_with_hole,
    reaction_forces,
    solve_displacement_controlled,
)
from fem_ml.constitutive.discovery import DiscoveredLaw, ModelCandidate, discover_law, plot_discovery
from fem_ml.constitutive.energy import EnergyTerm, Invariants, StrainEnergy, default_library, deformation_invariants
from fem_ml.constitutive.system import ConstitutiveSystem, assemble_system

__all__ = [
    "ConstitutiveSystem",
    "DiscoveredLaw",
    "EnergyTerm",
    "Invariants",
    "LoadPath",
    "ModelCandidate",
    "StrainEnergy",
    "add_displacement_noise",
    "assemble_system",
    "default_library",
    "deformation_invariants",
    "discover_law",
    "plate_with_hole",
    "plot_discovery",
    "reaction_forces",
    "solve_displacement_controlled",
]
