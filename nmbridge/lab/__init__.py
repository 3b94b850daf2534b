"""Lab gear: network namespaces with veth and TAP (sandbox) and UDP streams
that count what arrives (traffic), for `nmbridge demo` and the tests. Nothing
here runs in a bridge."""
