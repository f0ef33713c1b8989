"""Installing the host plugins: copy a plugin and its shared payload where the host looks.

    krita.py        the Krita plugin: install into a pykrita folder, or build its zip
    gimp.py         the GIMP 3 plug-in: install into a plug-ins folder
    payload.py      what both plugins carry: protocol/, client/ (with VERSION), _vendor/
    cli_install.py  `differential-inpaint install-plugin {krita,gimp} [--dest DIR]`
    cli_package.py  `differential-inpaint package-plugin krita --out FILE.zip`

Nothing here imports the backend: installing a plugin needs no torch.
"""
