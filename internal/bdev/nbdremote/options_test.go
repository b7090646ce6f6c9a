package nbdremote

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	s := time.Second
	tests := []struct {
		loss, delay, fail time.Duration
		says              string // "" when valid
	}{
		{-s, s, 30 * s, ""}, // the defaults
		{0, 0, 0, ""},
		{-s, s, 0, ""},
		{10 * s, 2 * s, 5 * s, ""},
		{10 * s, 10 * s, 10 * s, ""},
		{-2 * s, s, 0, "ctrlr_loss_timeout_sec"},
		{-s, 0, 0, "reconnect_delay_sec can't be 0"},
		{5 * s, 0, 0, "reconnect_delay_sec can't be 0"},
		{-s, 5 * s, 2 * s, "can't be more than fast_io_fail_timeout_sec"},
		{5 * s, 6 * s, 0, "can't be more than ctrlr_loss_timeout_sec"},
		{5 * s, s, 6 * s, "fast_io_fail_timeout_sec 6s can't be more than ctrlr_loss_timeout_sec"},
		{0, s, 0, "must both be 0"},
		{0, 0, s, "must both be 0"},
	}
	for _, tc := range tests {
		o := DefaultOptions()
		o.CtrlrLossTimeout, o.ReconnectDelay, o.FastIOFailTimeout = tc.loss, tc.delay, tc.fail
		err := o.Validate()
		if tc.says == "" {
			if err != nil {
				t.Errorf("%v/%v/%v: %v", tc.loss, tc.delay, tc.fail, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%v/%v/%v: %v, want ErrInvalidOptions saying %q", tc.loss, tc.delay, tc.fail, err, tc.says)
		}
	}
	o := DefaultOptions()
	o.Connections = 0
	if err := o.Validate(); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("0 connections: %v", err)
	}
}
