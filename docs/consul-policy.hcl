# The Consul ACL policy pynet needs: read and write under its own key prefix, nothing else.
# (pynet uses no sessions, no catalog, no services: no other rule is needed.)
# Change "pynet/" if you run pynet with another --consul-prefix.
key_prefix "pynet/" {
  policy = "write"
}
