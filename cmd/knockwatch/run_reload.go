//go:build linux

package main

import (
	"io"
	"strings"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/config"
)

// reload (SIGHUP) re-reads the configuration file and the flags and applies
// what can change without losing state: the suppression lists (engine and
// the XDP allowlist) and the --hosts inventory. It also reopens the alert
// file after log rotation. A reload that fails keeps the current settings.
func (r *runState) reload() {
	log := r.log.Named("run")
	cfg, _, err := config.Load(r.args, io.Discard)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		log.Error("reload failed; keeping the current settings", zap.Error(err))
		return
	}
	ec, err := cfg.EngineConfig()
	if err != nil {
		log.Error("reload failed; keeping the current settings", zap.Error(err))
		return
	}
	prefixes, _ := cfg.Suppression.AllowedPrefixes()
	var inv correlate.Inventory
	hosts := 0
	if cfg.Hosts != "" {
		h, err := correlate.ReadHostsFile(cfg.Hosts)
		if err != nil {
			log.Error("reload failed; keeping the current settings", zap.Error(err))
			return
		}
		inv, hosts = h, h.Len()
	} else {
		h, _ := correlate.ParseHosts(strings.NewReader(""))
		inv = h
	}
	if err := r.pipe.Engine().SetSuppression(ec.Suppression); err != nil {
		log.Error("reload failed; keeping the current settings", zap.Error(err))
		return
	}
	r.sensorMu.Lock()
	if r.sensor != nil {
		if err := r.sensor.SetAllowlist(prefixes); err != nil {
			log.Error("reload: set the XDP allowlist", zap.Error(err))
		}
	}
	r.sensorMu.Unlock()
	r.pipe.Engine().SetInventory(inv)
	if r.writer != nil {
		if err := r.writer.Reopen(); err != nil {
			log.Error("reload: reopen the alert file", zap.Error(err))
		}
	}
	r.cfg.Suppression, r.cfg.Hosts = cfg.Suppression, cfg.Hosts
	log.Info("reloaded suppression lists and inventory",
		zap.Int(fPrefixes, len(prefixes)), zap.Int("change_windows", len(ec.Suppression.ChangeWindows)),
		zap.Int("admin_users", len(ec.Suppression.AdminUsers)), zap.Int("admin_applications", len(ec.Suppression.AdminApplications)),
		zap.String(fPath, cfg.Hosts), zap.Int(fHosts, hosts))
}
