package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"
	_ "github.com/aws/aws-sdk-go-v2/service/ec2"
	_ "gopkg.in/yaml.v3"
)

func main() {
	pps := plugin.NewSet()
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
