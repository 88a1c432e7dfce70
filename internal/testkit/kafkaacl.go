//go:build unix

package testkit

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"gopkg.in/yaml.v3"
)

// KafkaUserACLs reads the Strimzi KafkaUser resources of file (SCRAM-SHA-512
// users with simple authorization) into kfake ACLs, by user name: a test
// runs fleetgate's processes against exactly the ACLs the deploy files ship.
func KafkaUserACLs(t testing.TB, file string) map[string][]kfake.ACL {
	t.Helper()
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	type resource struct {
		Type        string `yaml:"type"`
		Name        string `yaml:"name"`
		PatternType string `yaml:"patternType"`
	}
	var ops = map[string]kmsg.ACLOperation{
		"Read": kmsg.ACLOperationRead, "Write": kmsg.ACLOperationWrite, "Create": kmsg.ACLOperationCreate,
		"Delete": kmsg.ACLOperationDelete, "Alter": kmsg.ACLOperationAlter, "Describe": kmsg.ACLOperationDescribe,
		"DescribeConfigs": kmsg.ACLOperationDescribeConfigs, "AlterConfigs": kmsg.ACLOperationAlterConfigs,
		"IdempotentWrite": kmsg.ACLOperationIdempotentWrite, "All": kmsg.ACLOperationAll,
	}
	types := map[string]kmsg.ACLResourceType{"topic": kmsg.ACLResourceTypeTopic, "group": kmsg.ACLResourceTypeGroup, "cluster": kmsg.ACLResourceTypeCluster}
	patterns := map[string]kmsg.ACLResourcePatternType{"literal": kmsg.ACLResourcePatternTypeLiteral, "prefix": kmsg.ACLResourcePatternTypePrefixed}
	out := map[string][]kfake.ACL{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var u struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     struct {
				Authentication struct{ Type string }
				Authorization  struct {
					Type string
					ACLs []struct {
						Resource   resource
						Operations []string
					} `yaml:"acls"`
				}
			}
		}
		err := dec.Decode(&u)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.Equal(t, "KafkaUser", u.Kind)
		require.Equal(t, "scram-sha-512", u.Spec.Authentication.Type, u.Metadata.Name)
		require.Equal(t, "simple", u.Spec.Authorization.Type, u.Metadata.Name)
		for _, a := range u.Spec.Authorization.ACLs {
			typ, ok := types[a.Resource.Type]
			require.True(t, ok, "%s: resource type %q", u.Metadata.Name, a.Resource.Type)
			pattern, ok := patterns[a.Resource.PatternType]
			require.True(t, ok, "%s: pattern type %q", u.Metadata.Name, a.Resource.PatternType)
			for _, o := range a.Operations {
				op, ok := ops[o]
				require.True(t, ok, "%s: operation %q", u.Metadata.Name, o)
				out[u.Metadata.Name] = append(out[u.Metadata.Name], kfake.ACL{Resource: typ, Name: a.Resource.Name, Pattern: pattern, Operation: op, Allow: true})
			}
		}
	}
	return out
}

// StartKafkaWithUsers starts a one-broker kfake cluster that authenticates
// with SCRAM-SHA-512 and authorizes by ACLs: the users of file
// (KafkaUserACLs), each with a password of the test's own, and a superuser
// for the test's own clients. It returns the broker, each user's fleetgate
// flags (-kafka.sasl.*) and the option that logs a test's client in as the
// superuser.
func StartKafkaWithUsers(t testing.TB, file string) (k *Kafka, flags map[string][]string, admin kgo.Opt) {
	t.Helper()
	adminPass := rand.Text()
	opts := []kfake.Opt{kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("SCRAM-SHA-512", "admin", adminPass)}
	flags = map[string][]string{}
	for user, acls := range KafkaUserACLs(t, file) {
		pw := rand.Text()
		opts = append(opts, kfake.User("SCRAM-SHA-512", user, pw, acls...))
		flags[user] = []string{"-kafka.sasl.mechanism", "SCRAM-SHA-512", "-kafka.sasl.username", user, "-kafka.sasl.password", pw}
	}
	return StartKafka(t, opts...), flags, kgo.SASL(scram.Auth{User: "admin", Pass: adminPass}.AsSha512Mechanism())
}
