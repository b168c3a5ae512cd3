package winevents

// Reason says why a record was rejected.
type Reason string

// Rejection reasons.
const (
	ReasonUnknownFormat  Reason = "unknown_format"
	ReasonMalformedJSON  Reason = "malformed_json"
	ReasonMalformedXML   Reason = "malformed_xml"
	ReasonTruncated      Reason = "truncated"
	ReasonTooLarge       Reason = "too_large"
	ReasonTooDeep        Reason = "too_deep"
	ReasonDTD            Reason = "dtd_forbidden"
	ReasonMissingEventID Reason = "missing_event_id"
	ReasonMissingHost    Reason = "missing_host"
	ReasonBadTime        Reason = "bad_time"
	// ReasonHostNotAllowed: the sender may not speak for the record's
	// computer (DecodeFrom with a HostPolicy).
	ReasonHostNotAllowed Reason = "host_not_allowed"
)

// Reasons lists every Reason in a stable order (for metrics).
var Reasons = []Reason{
	ReasonUnknownFormat, ReasonMalformedJSON, ReasonMalformedXML, ReasonTruncated, ReasonTooLarge,
	ReasonTooDeep, ReasonDTD, ReasonMissingEventID, ReasonMissingHost, ReasonBadTime, ReasonHostNotAllowed,
}

func reasonIndex(r Reason) int {
	for i, x := range Reasons {
		if x == r {
			return i
		}
	}
	return 0
}

func formatIndex(f Format) int {
	for i, x := range Formats {
		if x == f {
			return i
		}
	}
	return len(Formats) - 1
}
