"""The embedded synthetic benchmark: 20 shape x texture classes in two visual styles.

:mod:`.classes` names the classes, :mod:`.shapes`, :mod:`.pascal` and :mod:`.render` draw a
scene, :mod:`.generate` writes the benchmark (``ensure_synth``), :mod:`.stats` measures it,
:mod:`.manifest` reads what a generated folder says about itself and :mod:`.sheet` draws its
contact sheet. This file imports nothing, so code that only needs the class names does not
depend on the generator.
"""
