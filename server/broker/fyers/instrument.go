package fyers

import (
	"errors"
	"strings"
)

// exchanges are the exchange prefixes of Fyers symbols (brokers.md §2.10).
var exchanges = map[string]bool{"NSE": true, "BSE": true, "MCX": true, "NCD": true, "BCD": true}

// maxSymbolLen bounds the part after ':'.
const maxSymbolLen = 64

// ValidateInstrumentKey reports whether key has the EXCH:SYMBOL form, with a
// known exchange and a non-empty, bounded symbol of letters, digits and
// "-&_." (e.g. NSE:M&M-EQ, NSE:NIFTY50-INDEX).
func ValidateInstrumentKey(key string) error {
	exch, sym, ok := strings.Cut(key, ":")
	switch {
	case key == "":
		return errors.New("symbol is empty")
	case !ok:
		return errors.New("symbol must look like EXCH:SYMBOL")
	case !exchanges[exch]:
		return errors.New("symbol has an unknown exchange")
	case sym == "":
		return errors.New("symbol is empty after the exchange")
	case len(sym) > maxSymbolLen:
		return errors.New("symbol is too long")
	}
	for _, r := range sym {
		if !('A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || strings.ContainsRune("-&_.", r)) {
			return errors.New("symbol has a character outside letters, digits and -&_.")
		}
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
