# Versions of the swarm configs: bump one when its file changes, so that a deploy makes a
# new config (swarm configs are immutable) instead of failing on the old name.
export CONFIG_YAML_VERSION=v2
export SQLITE_BACKUP_VERSION=v1
