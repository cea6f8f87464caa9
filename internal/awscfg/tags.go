package awscfg

// Tags the wsgi-ami builder writes on every AMI and snapshot it makes, in
// every region. The wsgi-launch-template post-processor finds a family's
// older AMIs by TagAMIFamily (never by name alone) when it applies
// keep_releases.
const (
	// TagAMIFamily holds the builder's ami_family (default: the build name).
	// All AMIs of one family are releases of the same image.
	TagAMIFamily = "wsgi:ami-family"
	// TagBuildID holds the Packer run UUID of the build that made the AMI;
	// the builder also tags its temporary instance, key pair and security
	// group with it, so a cleanup can find what an interrupted call made.
	TagBuildID = "wsgi:build-id"
	// TagSourceAMI holds the id of the AMI the build started from.
	TagSourceAMI = "wsgi:source-ami"
	// TagBuilder is set to BuilderName on everything the builder makes.
	TagBuilder = "wsgi:builder"
	// BuilderName is the value of TagBuilder.
	BuilderName = "wsgi-ami"
)
