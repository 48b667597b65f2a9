"""What this machine has and where our files go: its GPU and CPU features (host, probe), the
data files a spec names (host), the user's memo folder (userdirs), the package's own files
(resources) and where an output file may be written (outputs)."""
