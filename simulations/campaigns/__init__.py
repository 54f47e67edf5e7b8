"""Above the simulator and the theory: resumable runs, comparison statistics, finite-size studies.

:mod:`.records` (result files and their metadata), :mod:`.resumable` (crash-safe runs of many
points), :mod:`.statistics` (mean ± s.e., control variates, z-scores, ``D → ∞`` extrapolation),
:mod:`.convergence` (theory vs simulation at one setting as ``D`` grows), :mod:`.validation` and the
``validate_*`` scripts (the validation campaigns), :mod:`.finetuning_claims`.
"""
