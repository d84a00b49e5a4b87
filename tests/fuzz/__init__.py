"""Structure-aware fuzzing (issue 17): valid inputs with one field mutated, so the checks after
parsing are reached. ``make test`` runs a bounded budget, ``make fuzz`` a long one."""
