package upstox

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// segments are the instrument key segments Upstox knows (docs/brokers/upstox.md §3.2).
var segments = map[string]bool{
	"NSE_EQ": true, "NSE_INDEX": true, "NSE_FO": true, "NCD_FO": true,
	"BSE_EQ": true, "BSE_INDEX": true, "BSE_FO": true, "BCD_FO": true,
	"MCX_FO": true, "GLOBAL_INDICATOR": true,
}

// maxIdentifierLen bounds the part after '|' (ISINs are 12, index names
// and exchange tokens shorter).
const maxIdentifierLen = 64

// ValidateInstrumentKey reports whether key has the SEGMENT|identifier form,
// with a known segment and an identifier that is non-empty, bounded, free of
// control characters and of ',' (which separates keys in a list).
func ValidateInstrumentKey(key string) error {
	seg, id, ok := strings.Cut(key, "|")
	switch {
	case key == "":
		return errors.New("instrument key is empty")
	case !ok:
		return errors.New("instrument key must look like SEGMENT|identifier")
	case !segments[seg]:
		return errors.New("instrument key has an unknown segment")
	case id == "":
		return errors.New("instrument key has an empty identifier")
	case len(id) > maxIdentifierLen:
		return errors.New("instrument key is too long")
	case strings.ContainsAny(id, ",|"):
		return errors.New("instrument key identifier contains ',' or '|'")
	case !utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl):
		return errors.New("instrument key contains control characters")
	case strings.TrimSpace(id) != id:
		return errors.New("instrument key identifier has surrounding spaces")
	}
	return nil
}

// ValidateInstrumentKey implements broker.Client; its failure is a
// ClassBadInput *broker.Error on instrument_key.
func (c *Client) ValidateInstrumentKey(key string) error {
	if err := ValidateInstrumentKey(key); err != nil {
		return badInput("validate instrument key", "instrument_key", err.Error())
	}
	return nil
}
