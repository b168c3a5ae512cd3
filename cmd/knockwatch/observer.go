package main

import (
	"os"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/version"
)

// sensorObserver identifies this machine in alerts (ECS observer.*): its
// host name, the binary's version and the capture interfaces.
func sensorObserver(ifaces []string) correlate.Observer {
	host, _ := os.Hostname()
	return correlate.Observer{Hostname: host, Version: version.String(), Interfaces: ifaces}
}
