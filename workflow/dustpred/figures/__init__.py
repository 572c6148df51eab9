"""Every ``plot_*`` rule and ``velocity_spectrum``: figures from the tables (PNG, PDF).

- ``style``       the one style: Agg backend, colours, line styles, markers, ``save_figure``
- ``paper``       the run's figures (Figs. 3-5, training curves)
- ``comparison``  figures that compare runs (Fig. 6, seed ensemble, Fig. 7)
- ``spectrum``    Fig. 1, the HI velocity spectrum (rule ``velocity_spectrum``)
- ``template``    the template's maps and sphere r_ell
"""
