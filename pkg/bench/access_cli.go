package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/access"
)

// mainAccessFiles runs `fleetgate-bench access-files`: the files of the
// access-control benchmark, then their paths.
func mainAccessFiles(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetgate-bench access-files", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg access.Config
	var c common
	cfg.RegisterFlags(fs)
	c.register(fs)
	if done, err := parse(fs, args, cfg.Validate); done || err != nil {
		return err
	}
	res, err := access.Generate(ctx, cfg, c.progress(stderr))
	if err != nil {
		return err
	}
	return c.output(stdout, res, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		names := make([]string, 0, len(res.Files))
		for name := range res.Files {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			fmt.Fprintf(tw, "%s\t%s\n", name, res.Files[name])
		}
		fmt.Fprintf(tw, "publish topic\t%s\t(allowed to each device by the last rule, %s)\n", access.PublishTopic, access.DeviceTopic)
		fmt.Fprintf(tw, "took\t%v\n", res.Took.Round(time.Millisecond))
		return tw.Flush()
	})
}
