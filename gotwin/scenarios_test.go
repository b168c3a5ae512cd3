package gotwin

// scenarios are named step sequences shared by the twin's own table test and
// the differential test; names starting with "knock" must produce records.
func scenarios(a, b conv) map[string][]step {
	knock3 := cat(a.rej(0, 7000), a.rej(sec(1), 8000), a.rej(sec(2), 9000))
	return map[string][]step{
		"knock REJ":          knock3,
		"knock REJ, connect": cat(knock3, a.connect(sec(5), 22)),
		"knock S0 with retransmissions": {
			a.syn(0, 7000), a.syn(sec(1), 7000), a.syn(sec(3), 8000), a.syn(sec(6), 9000), a.syn(sec(9), 10000),
		},
		"knock S0 by sweep": cat([]step{a.syn(0, 7000), a.syn(sec(0.5), 8000), a.syn(sec(1), 9000), {at: sec(5), sweep: true}},
			a.connect(sec(6), 22)),
		"knock, other source first":   cat(knock3, b.connect(sec(3), 22), a.connect(sec(5), 22)),
		"knock, port open all along":  cat(b.connect(0, 22), knock3, a.connect(sec(5), 22)),
		"knock, incomplete handshake": cat(knock3, []step{a.syn(sec(5), 22), a.synack(sec(5.001), 22), a.rst(sec(5.002), 22)}),
		"knock, wrong ack": cat(knock3, []step{a.syn(sec(5), 22), a.synack(sec(5.001), 22),
			func() step { s := a.ack(sec(5.002), 22); s.p.Ack++; return s }()}),
		"knock, repeated connect":   cat(knock3, a.connect(sec(5), 22), a.connect(sec(6), 22)),
		"knock, handshake too slow": cat(knock3, []step{a.syn(sec(5), 22), a.synack(sec(5.001), 22), a.ack(sec(40), 22)}),
		"below threshold":           cat(a.rej(0, 7000), a.rej(sec(1), 8000), a.rej(sec(2), 8000)),
		"too slow":                  cat(a.rej(0, 7000), a.rej(sec(20), 8000), a.rej(sec(40), 9000)),
		"backscatter":               {a.rst(0, 7000), a.rst(sec(1), 8000), a.rst(sec(2), 9000)},
		"knock scan": func() []step {
			var s []step
			for i := 0; i < 40; i++ {
				s = append(s, a.rej(sec(float64(i)*0.01), uint16(1000+i))...)
			}
			return append(s, a.connect(sec(1), 22)...)
		}(),
	}
}
