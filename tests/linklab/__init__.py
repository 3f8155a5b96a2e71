"""Link lab: a real Samba server in a network namespace behind links we can slow down or cut."""

from .rig import RigError, SambaRig

__all__ = ["RigError", "SambaRig"]
