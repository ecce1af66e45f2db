# Kluis workspace: Jupyter server and JupyterLab settings. This folder is JUPYTER_CONFIG_DIR, so
# it takes the place of ~/.jupyter and a researcher cannot override it (root-owned, read-only).
c = get_config()  # type: ignore[name-defined]  # noqa: F821

# Downloads off: raw files, "open in new tab" and notebook export answer 403 (kluis_workspace.py);
# the UI's download commands are disabled and locked in labconfig/page_config.json.
c.ServerApp.jpserver_extensions.update({"kluis_workspace": True})
# No extension installation: the extension manager cannot install (and is disabled in the UI).
c.LabApp.extension_manager = "readonly"
# No plugin can be enabled or disabled from the UI (the download plugins stay off).
c.LabApp.lock_all_plugins = True
# No news or update checks.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
# Hidden files stay hidden; deleting does not need a trash folder.
c.ContentsManager.allow_hidden = False
c.FileContentsManager.delete_to_trash = False
# Terminals stay on for running scripts; the image carries no network tools (curl, wget, ssh,
# nc, git ...) and the project's NetworkPolicies allow no egress anyway.
c.ServerApp.terminals_enabled = True
