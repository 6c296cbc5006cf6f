# Passerelle (role spamassassin): loaded by spamd only, through its --cf option.
#
# After every message spamd puts back the whole configuration it saved at start
# (Mail::SpamAssassin::copy_config -> Conf::clone, some 33,000 entries), in case the message's
# user brought settings of their own. Passerelle's spamd reads none: --nouser-config, no SQL
# or LDAP preferences, no user rules; one user for every message. The configuration after a
# message is then the one before it, and the restore is only a cost (about 14 ms of CPU per
# message on the lab's 2-core VM, a sixth of spamd's time; docs/benchmarks.md). This plugin
# makes that one call, a restore into the live configuration, a no-op; spamd's saving copy at
# start and every other use of copy_config stay as they are. With allow_user_rules set (user
# rules would change the configuration) it restores as spamd does.
# MIMEDefang and amavisd-new scan with one SpamAssassin object in the same way, without a
# restore between messages.
package PasserelleSpamdKeepConfig;

use strict;
use warnings;

use Mail::SpamAssassin;
use Mail::SpamAssassin::Plugin;
use Mail::SpamAssassin::Logger;

our @ISA = qw(Mail::SpamAssassin::Plugin);

my $restore;    # SpamAssassin's own copy_config, once replaced

sub new {
  my ($class, $mailsa) = @_;
  my $self = $class->SUPER::new($mailsa);
  bless($self, $class);
  unless ($restore) {
    $restore = \&Mail::SpamAssassin::copy_config;
    no warnings 'redefine';
    *Mail::SpamAssassin::copy_config = \&copy_config;
    info('passerelle: spamd keeps its configuration between messages (no restore)');
  }
  return $self;
}

sub copy_config {
  my ($msa, $source, $dest) = @_;
  if (defined $source && ref($source) eq 'HASH' && !defined $dest
      && !$msa->{conf}->{allow_user_rules}) {
    dbg('passerelle: configuration kept, no restore');
    return 1;
  }
  return $restore->(@_);
}

1;
