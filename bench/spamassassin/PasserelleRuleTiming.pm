# SpamAssassin plugin for bench/spam_profile.py: the time spent in each rule, summed over the
# messages of a run. Between two rules of the same type and priority, SpamAssassin calls
# ran_rule after each one; the time since the previous call (or since start_rules) is charged
# to the rule just run. Written to $PASSERELLE_RULE_TIMING (tab separated: rule, type, calls,
# seconds) after every message. Loaded only by the benchmark (spamassassin --cf=loadplugin).
package PasserelleRuleTiming;

use strict;
use warnings;
use Time::HiRes qw(time);
use Mail::SpamAssassin::Plugin;
our @ISA = qw(Mail::SpamAssassin::Plugin);

my %seconds;
my %calls;
my %types;

sub new {
    my ($class, $mailsa) = @_;
    my $self = $class->SUPER::new($mailsa);
    bless($self, $class);
    return $self;
}

sub start_rules {
    my ($self, $opts) = @_;
    $opts->{permsgstatus}->{passerelle_rule_t0} = time;
    return;
}

sub ran_rule {
    my ($self, $opts) = @_;
    my $pms = $opts->{permsgstatus};
    my $now = time;
    my $t0 = $pms->{passerelle_rule_t0} // $now;
    my $name = $opts->{rulename};
    $seconds{$name} += $now - $t0;
    $calls{$name} += 1;
    $types{$name} = $opts->{ruletype};
    $pms->{passerelle_rule_t0} = $now;
    return;
}

sub check_end {
    my ($self, $opts) = @_;
    my $path = $ENV{PASSERELLE_RULE_TIMING} or return;
    # spamassassin runs in taint mode: accept only a plain absolute path.
    ($path) = $path =~ m{\A(/[\w./-]+)\z} or return;
    open(my $fh, '>', "$path.tmp") or return;
    for my $name (keys %seconds) {
        printf $fh "%s\t%s\t%d\t%.6f\n", $name, $types{$name}, $calls{$name}, $seconds{$name};
    }
    close($fh);
    rename("$path.tmp", $path);
    return;
}

1;
