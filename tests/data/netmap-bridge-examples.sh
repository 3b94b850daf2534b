#!/bin/sh
# Command lines written for netmap's `bridge` (apps/bridge: its usage text and man
# page bridge.8), run unchanged with BRIDGE=nmbridge. tests/unit/test_bridge_habits.py
# reads each line and checks what nmbridge makes of it.
BRIDGE=${BRIDGE:-bridge}
$BRIDGE -w 10 -i netmap:eth3 -i netmap:eth1
$BRIDGE -i netmap:eth0
$BRIDGE -i netmap:eth0 -i netmap:eth0
$BRIDGE netmap:eth0
$BRIDGE netmap:eth0 netmap:eth1
$BRIDGE netmap:eth0 netmap:eth1 512
$BRIDGE -v -w 5 -b 512 -c -i netmap:eth0 -i netmap:eth1
$BRIDGE -i vale0:a -i vale0:b -b 64
$BRIDGE -L -i netmap:eth0
$BRIDGE -L netmap:eth0
$BRIDGE -v -L -w 2 netmap:eth0 netmap:eth0 256
