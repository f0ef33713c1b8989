"""Installing the host plugins: copy a plugin and its shared payload where the host looks.

    krita.py          the Krita plugin: install into a pykrita folder, or build its zip
    gimp.py           the GIMP 3 plug-in: install into a plug-ins folder
    payload.py        what both plugins carry: protocol/, client/ (with VERSION, and daemon.json), _vendor/
    daemon_record.py  the command that starts this installation's daemon, checked with the
                      daemon's own options and recorded in the plugin (client/daemon.json)
    cli_install.py    `differential-inpaint install-plugin {krita,gimp} [--dest DIR] [--serve-args "..."]`
    cli_package.py    `differential-inpaint package-plugin krita --out FILE.zip`

Nothing here imports torch: installing a plugin needs only the daemon's argument parser.
"""
