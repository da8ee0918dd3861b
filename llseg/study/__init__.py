"""The study around the method: what the paper measures, compares and shows.

=================  ==========================================================================
``evaluation``     Table 1 (Dice vs interobserver), volume / MSD summaries (Figure 6)
``comparison``     Figure 4: stage 1 alone vs stage 2 from different boxes and the six-box average
``ablation``       Figure 5: architecture variants of the adductor brevis network and their training
                   (``ablation_results``: curves, summary, ``metrics/ablation.json``, the figure)
``claims``         the paper's claims, each with this run's number, a bootstrap interval and a
                   computed verdict (``claim_checks``: the named checks, ``claim_ablation``: those of
                   Figure 5; ``claim_inputs``: input accessors and the paired bootstrap)
``figures``        Figures 3, 6 and 7 and the shared slice views (one function per figure)
``viewer``         the walkthrough's static views and interactive slice viewer (``slices`` draws one slice)
``summary``        the few lines ``make study`` ends with (``llseg summary``)
=================  ==========================================================================

The method core (``llseg.*``) never imports this package; the study reads the core's outputs.
"""
