package sensor

import "testing"

func TestParseMode(t *testing.T) {
	for _, ok := range []string{"auto", "native", "generic"} {
		if _, err := ParseMode(ok); err != nil {
			t.Errorf("ParseMode(%q): %v", ok, err)
		}
	}
	if _, err := ParseMode("offload"); err == nil {
		t.Error("ParseMode(offload) succeeded")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	bad := []func(*Config){
		func(c *Config) { c.MinPorts = 1 },
		func(c *Config) { c.MinPorts = 17 },
		func(c *Config) { c.Window = 0 },
		func(c *Config) { c.S0Timeout = -1 },
		func(c *Config) { c.PairSlots = 0 },
		func(c *Config) { c.RingBytes = 5000 },
	}
	for i, mut := range bad {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("bad config %d accepted", i)
		}
	}
}

func TestRoundPow2(t *testing.T) {
	for in, want := range map[uint32]uint32{0: 1, 1: 1, 2: 2, 3: 4, 1000: 1024, 1 << 18: 1 << 18, 1<<18 + 1: 1 << 19} {
		if got := RoundPow2(in); got != want {
			t.Errorf("RoundPow2(%d) = %d, want %d", in, got, want)
		}
	}
}
