"""The stages of a run: the one place that reads and writes a run directory.

Each stage asks :class:`~trcgl.run_dir.RunDir` where its inputs and outputs are, calls the
libraries (``data``, ``labels``, ``models``, ``diffusion``, ``training``, ``evaluation``), and
writes its record last. Libraries never import this package.
"""
