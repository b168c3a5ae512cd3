package winevents

import "container/list"

// The join state keeps every change it may emit again (a rule's last
// Firewall-channel state, a 4946 waiting for its 5447, a listener waiting
// for its filter) with its strings cut at maxKeptFieldBytes, so that a
// forwarder cannot make each kept change as large as an event. A change
// emitted again must still carry its values whole, like every emitted
// change: the whole values of the cut strings are kept beside it, under
// one budget for the whole decoder (maxLongBytes). Past the budget the
// oldest go (counted, Stats.LongValuesDropped) and a change emitted again
// from them carries the cut, marked values — what the engine keeps of any
// change anyway (it cuts its stored strings at the same length).

// maxLongBytes bounds the whole values kept for cut strings, over all
// hosts. Real values are far shorter than the cut (MAX_PATH is 260
// characters): only hostile or unusual input uses it.
const maxLongBytes = 16 << 20

// numKeptFields is the number of string fields keptFields returns.
const numKeptFields = 12

// keptFields returns the strings of c that the join state cuts.
func keptFields(c *ExposureChange) [numKeptFields]*string {
	return [numKeptFields]*string{&c.Host, &c.Profiles, &c.RuleID, &c.RuleName, &c.RuleGroup, &c.Application, &c.Service,
		&c.ModifyingUser, &c.ModifyingApplication, &c.LocalSideBy, &c.Layer, &c.Setting}
}

// keptChange is a change as the join state holds it: its strings cut, and
// the whole values of the cut ones while the budget holds them.
type keptChange struct {
	ExposureChange
	long *longValues // nil: nothing was cut
}

// longValues are the whole values of a kept change's cut strings (""
// for a field that was not cut).
type longValues struct {
	v     [numKeptFields]string
	bytes int
	e     *list.Element // in state.long; nil once dropped or released
}

// keep returns c as the join state holds it.
func (s *state) keep(c ExposureChange) keptChange {
	k := keptChange{ExposureChange: c}
	var lv *longValues
	for i, f := range keptFields(&k.ExposureChange) {
		if len(*f) > maxKeptFieldBytes {
			if lv == nil {
				lv = &longValues{}
			}
			lv.v[i] = *f
			lv.bytes += len(*f)
			*f = clampField(*f, maxKeptFieldBytes)
		}
	}
	if lv != nil {
		k.long = lv
		lv.e = s.long.PushBack(lv)
		s.longBytes += lv.bytes
		for s.longBytes > maxLongBytes {
			old := s.long.Front().Value.(*longValues)
			s.release(old)
			s.counts.LongDropped++
		}
	}
	return k
}

// release gives a kept change's whole values back to the budget (the
// change was replaced, emitted for the last time or dropped).
func (s *state) release(lv *longValues) {
	if lv == nil || lv.e == nil {
		return
	}
	s.long.Remove(lv.e)
	s.longBytes -= lv.bytes
	*lv = longValues{}
}

// whole returns the kept change with the whole values it still has.
func (k *keptChange) whole() ExposureChange {
	c := k.ExposureChange
	if k.long != nil && k.long.e != nil {
		for i, f := range keptFields(&c) {
			if v := k.long.v[i]; v != "" {
				*f = v
			}
		}
	}
	return c
}
