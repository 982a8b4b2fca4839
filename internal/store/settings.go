package store

import (
	"context"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// settingsPartition holds, in the control table, the settings changed from
// the UI or the API, one row per setting: a string value (secret ones
// included, such as notification URLs: the table is as private as the
// dispatcher's environment).
const settingsPartition = "settings"

// MaxSetting is the longest setting value in bytes (one string property).
const MaxSetting = 30000

// Setting is a stored setting as read: its value and the row's version.
type Setting struct {
	Name  string
	Value string
	// ETag is the row's version ("" when the setting is not stored); SetSetting writes only over it.
	ETag string
}

// GetSetting reads the named setting; a setting never stored reads as an
// empty value with an empty ETag.
func (s *Store) GetSetting(ctx context.Context, name string) (Setting, error) {
	const op = "get setting"
	if err := checkKey(op, "setting", name); err != nil {
		return Setting{}, err
	}
	resp, err := s.control.GetEntity(ctx, settingsPartition, name, nil)
	switch {
	case isNotFound(err):
		return Setting{Name: name}, nil
	case err != nil:
		return Setting{}, failure(op, name, err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return Setting{}, failure(op, name, err)
	}
	return Setting{Name: name, Value: row{e}.str("Value"), ETag: string(resp.ETag)}, nil
}

// SetSetting writes st.Value over the version st.ETag names (creating the
// row when st.ETag is empty), in one round trip: ErrChanged when the
// setting was written since it was read.
func (s *Store) SetSetting(ctx context.Context, st Setting) error {
	const op = "set setting"
	if err := checkKey(op, "setting", st.Name); err != nil {
		return err
	}
	if len(st.Value) > MaxSetting {
		return invalid(op, "setting %s: %d bytes, at most %d", st.Name, len(st.Value), MaxSetting)
	}
	p := props{}
	p.str("Value", st.Value)
	b, err := p.entity(settingsPartition, st.Name)
	if err != nil {
		return failure(op, st.Name, err)
	}
	if st.ETag == "" {
		_, err = s.control.AddEntity(ctx, b, nil)
	} else {
		match := azcore.ETag(st.ETag)
		_, err = s.control.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeReplace, IfMatch: &match})
	}
	switch {
	case isConflict(err), isPrecondition(err), isNotFound(err):
		return changed(op, st.Name)
	case err != nil:
		return failure(op, st.Name, err)
	}
	return nil
}
