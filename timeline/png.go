package timeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// ErrNoRenderer is returned by PNG when rsvg-convert is not installed.
var ErrNoRenderer = errors.New("rsvg-convert not found (Debian: apt-get install librsvg2-bin)")

// PNG converts an SVG document to PNG with librsvg's rsvg-convert, at the
// SVG's size times zoom (1: 1200 px wide).
func PNG(ctx context.Context, svg []byte, zoom float64) ([]byte, error) {
	bin, err := exec.LookPath("rsvg-convert")
	if err != nil {
		return nil, ErrNoRenderer
	}
	if zoom <= 0 {
		zoom = 1
	}
	cmd := exec.CommandContext(ctx, bin, "--format", "png", "--zoom", fmt.Sprint(zoom), "--background-color", "white")
	cmd.Stdin = bytes.NewReader(svg)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("render png with rsvg-convert: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if out.Len() == 0 {
		return nil, errors.New("render png with rsvg-convert: no output")
	}
	return out.Bytes(), nil
}
