//go:build linux

package daemon

import (
	"fmt"
	"net/netip"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/internal/config"
)

// Reload applies what can change without losing state: the suppression
// lists (engine and XDP allowlist) and the host inventory of cfg; it also
// reopens the alert file (after log rotation). cfg is checked first: a
// configuration that does not validate or build changes nothing and the
// error says why. Everything else in cfg (interfaces, listeners, sizes)
// needs a restart.
func (d *Daemon) Reload(cfg config.Config) error {
	log := d.log.Named("run")
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	b, err := cfg.Build()
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if d.pipe != nil && !cfg.Distributed() {
		if err := d.pipe.Engine().SetSuppression(b.Pipeline.Engine.Suppression); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
	}
	if c := d.correlator.Load(); c != nil {
		if err := c.SetSuppression(b.Pipeline.Engine.Suppression); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		c.SetInventory(b.Inventory)
	}
	if p := d.producer.Load(); p != nil {
		inv := b.Inventory
		p.SetResolver(func(host string) []netip.Addr { return inv.IPs(host) })
	}
	if s := d.sensor.Load(); s != nil {
		if err := s.SetAllowlist(b.Allowed); err != nil {
			log.Error("reload: set the XDP allowlist", zap.Error(err))
		}
		if d.pipe != nil && d.pipe.Coverage() != nil {
			if err := s.SetDestinationNets(b.CoverageNetworks); err != nil {
				log.Error("reload: set coverage.networks", zap.Error(err))
			}
		}
	}
	if d.pipe != nil && !cfg.Distributed() {
		d.pipe.SetInventory(b.Inventory)
	}
	if d.writer != nil {
		if err := d.writer.Reopen(); err != nil {
			log.Error("reload: reopen the alert file", zap.Error(err))
		}
	}
	d.mu.Lock()
	d.cfg.Suppression, d.cfg.Hosts = cfg.Suppression, cfg.Hosts
	d.mu.Unlock()
	sup := b.Pipeline.Engine.Suppression
	log.Info("reloaded suppression lists and inventory",
		zap.Int(fieldPrefixes, len(b.Allowed)), zap.Int("change_windows", len(sup.ChangeWindows)),
		zap.Int("admin_users", len(sup.AdminUsers)), zap.Int("admin_applications", len(sup.AdminApplications)),
		zap.String(fieldPath, cfg.Hosts), zap.Int(fieldHosts, b.Hosts))
	return nil
}
