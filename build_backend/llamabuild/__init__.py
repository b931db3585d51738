# SPDX-License-Identifier: Apache-2.0
"""llamabuild: builds the llama.cpp shared libraries that embellama loads. Standard library only.

``python build_llama.py`` (a checkout), ``python -m llamabuild`` and ``embellama build`` run
:func:`llamabuild.cli.main`; the PEP 517 backend (``build_backend/embellama_build.py``) calls it for
a wheel. One module per concern, from the bottom up:

* :mod:`~llamabuild.pins` (``pins.json``): the pinned llama.cpp;
* :mod:`~llamabuild.report`, :mod:`~llamabuild.files`, :mod:`~llamabuild.paths`, :mod:`~llamabuild.process`:
  messages and errors, files, folders, running a command;
* :mod:`~llamabuild.source`: fetching and unpacking llama.cpp;
* :mod:`~llamabuild.cuda`, :mod:`~llamabuild.cmake`: CMake options, commands, incremental configure;
* :mod:`~llamabuild.cdef`, :mod:`~llamabuild.probe`: the declarations and the C layout probe
  (the one embellama has);
* :mod:`~llamabuild.install`, :mod:`~llamabuild.manifest`: the install step and ``manifest.json``;
* :mod:`~llamabuild.plan`, :mod:`~llamabuild.build`: the plan of a build and its steps;
* :mod:`~llamabuild.update`: moving the pin; :mod:`~llamabuild.cli`: the command line.
"""
